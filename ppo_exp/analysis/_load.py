"""Loading: a study's trials, or a sweep's runs, from MLflow as one tidy row each."""

from __future__ import annotations

import ast
import math
from typing import Any

import pandas as pd
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from ppo_exp.config import PPOConfig

PARAM_PREFIX = "params."  # hyperparameter columns: config key = MLflow param = params.<key>
SEED_PREFIX = "objective.seed_"  # per-seed objective columns of a trial: objective.seed_<s>
# A run's MLflow status as a trial state: the sweeper ends pruned runs KILLED.
STATE_OF_STATUS = {
    "FINISHED": "COMPLETE",
    "KILLED": "PRUNED",
    "FAILED": "FAIL",
    "RUNNING": "RUNNING",
    "SCHEDULED": "RUNNING",
}
ESSENTIAL = ("run_id", "run_name", "kind", "state", "objective")  # in every load_runs table


def load_runs(
    tracking_uri: str | None = None,
    *,
    experiment: str = "ppo_exp",
    study: str | None = None,
    sweep_run_id: str | None = None,
    kind: str | None = None,
    objective: str | None = None,
) -> pd.DataFrame:
    """The trials of a study, or the runs of a sweep, as one tidy row each.

    Args:
        tracking_uri: MLflow store; None = MLflow's default ($MLFLOW_TRACKING_URI, or
            sqlite:///mlflow.db in the working directory).
        experiment: MLflow experiment holding the runs.
        study: a study name (its most recent MLflow parent run), or "latest".
        sweep_run_id: a sweep's parent run id, or "latest"; ignored when `study` is set.
        kind: "trial" (one row per trial; the default for a study) or "run" (one row
            per training run, e.g. per seed of each trial; the default otherwise).
        objective: the metric in column `objective`; None = the study's first objective,
            else the runs' configured `objective`, else `eval/score_auc`.

    Returns:
        Columns run_id, run_name, kind, state (COMPLETE | PRUNED | FAIL | RUNNING),
        status, trial, seed (runs) or n_seeds (trials), objective, objective.seed_<s>
        (trials), reason (why it was pruned or failed), parent_run_id, start_time, then
        one typed column per hyperparameter, `params.<config key>`. `attrs` holds the
        objective name and direction, the study name and the parent run id.

    Raises:
        LookupError: the experiment, study or sweep is not in the store.
        ValueError: `kind` is neither "trial" nor "run".
    """
    if kind not in (None, "trial", "run"):
        raise ValueError(f"kind={kind!r}: expected 'trial' or 'run'")
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment_id = _experiment_id(client, experiment)
    parent, trials_by_run = None, {}
    if study is not None:
        extra = "" if study == "latest" else f" and tags.ppo_exp.study = '{study}'"
        parent = _latest(client, experiment_id, "study", extra, f"study {study!r}")
        kind = kind or "trial"
        trial_runs = _search(client, experiment_id, _children_filter("trial", parent.info.run_id))
        if kind == "trial":
            runs = trial_runs
        else:
            trials_by_run = {r.info.run_id: r for r in trial_runs}
            runs = [
                r
                for r in _search(client, experiment_id, "tags.ppo_exp.kind = 'run'")
                if r.data.tags.get("mlflow.parentRunId") in trials_by_run
            ]
    elif sweep_run_id is not None:
        if sweep_run_id == "latest":
            parent = _latest(client, experiment_id, "sweep", "", "sweep")
        else:
            parent = client.get_run(sweep_run_id)
        kind = kind or "run"
        runs = _search(client, experiment_id, _children_filter(kind, parent.info.run_id))
    else:
        kind = kind or "run"
        runs = _search(client, experiment_id, f"tags.ppo_exp.kind = '{kind}'")
    name, direction = _objective(parent, runs, objective)
    rows = [_row(run, name, trials_by_run) for run in runs]
    frame = _tidy(pd.DataFrame(rows))
    frame.attrs.update(
        objective=name,
        direction=direction,
        kind=kind,
        study=parent.data.tags.get("ppo_exp.study") if parent else None,
        parent_run_id=parent.info.run_id if parent else None,
    )
    return frame


def _experiment_id(client: MlflowClient, experiment: str) -> str:
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise LookupError(f"no MLflow experiment {experiment!r} at {client.tracking_uri}")
    return found.experiment_id


def _children_filter(kind: str, parent_run_id: str) -> str:
    return f"tags.ppo_exp.kind = '{kind}' and tags.mlflow.parentRunId = '{parent_run_id}'"


def _search(client: MlflowClient, experiment_id: str, filter_string: str) -> list[Run]:
    """Every run matching `filter_string`, newest first (MLflow pages its results)."""
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string,
            max_results=1000,
            order_by=["attributes.start_time DESC"],
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _latest(client: MlflowClient, experiment_id: str, kind: str, extra: str, what: str) -> Run:
    found = _search(client, experiment_id, f"tags.ppo_exp.kind = '{kind}'{extra}")
    if not found:
        raise LookupError(f"no {what} in the MLflow store {client.tracking_uri}")
    return found[0]


def _objective(parent: Run | None, runs: list[Run], objective: str | None) -> tuple[str, str]:
    """The objective metric and its direction, from the study if there is one."""
    declared: dict[str, str] = {}
    if parent is not None and "study.objectives" in parent.data.params:
        try:
            declared = dict(ast.literal_eval(parent.data.params["study.objectives"]))
        except (ValueError, SyntaxError):
            declared = {}  # logged by an older harness: fall back on the runs' config
    configured = pd.Series([r.data.params.get("objective") for r in runs]).dropna()
    name = (
        objective
        or next(iter(declared), None)
        or (configured.mode().iloc[0] if len(configured) else PPOConfig.objective)
    )
    return name, declared.get(name, "maximize")


def _row(run: Run, objective: str, trials_by_run: dict[str, Run]) -> dict[str, Any]:
    """One run as a flat dict: ids, state, objective, per-seed values and params."""
    tags, metrics = run.data.tags, run.data.metrics
    kind = tags.get("ppo_exp.kind", "run")
    state = tags.get("ppo_exp.trial_state") or STATE_OF_STATUS.get(run.info.status, "RUNNING")
    parent_id = tags.get("mlflow.parentRunId")
    trial_tags = trials_by_run[parent_id].data.tags if parent_id in trials_by_run else tags
    row: dict[str, Any] = {
        "run_id": run.info.run_id,
        "run_name": run.info.run_name,
        "kind": kind,
        "state": state,
        "status": run.info.status,
        "trial": trial_tags.get("ppo_exp.trial_number"),
        "objective": metrics.get(objective, math.nan),
        "reason": tags.get("ppo_exp.error") or tags.get("ppo_exp.pruned"),
        "parent_run_id": parent_id,
        "start_time": pd.to_datetime(run.info.start_time, unit="ms", utc=True),
    }
    prefix = f"{objective}.seed_"
    for key, value in metrics.items():
        if key.startswith(prefix):
            row[SEED_PREFIX + key.removeprefix(prefix)] = value
    for key, value in run.data.params.items():
        if key == "seed":
            row["seed"] = value  # the replicate, not a hyperparameter
        elif not key.startswith("study."):
            row[PARAM_PREFIX + key] = value
    return row


def _tidy(frame: pd.DataFrame) -> pd.DataFrame:
    """Typed columns in a fixed order: ids and outcome first, hyperparameters last."""
    if frame.empty:
        return pd.DataFrame(columns=list(ESSENTIAL))
    for column in ("trial", "seed"):
        if column in frame:
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
    seed_columns = sorted(
        (c for c in frame if c.startswith(SEED_PREFIX)),
        key=lambda c: int(c.removeprefix(SEED_PREFIX)),
    )
    if seed_columns and frame["kind"].eq("trial").all():
        frame["n_seeds"] = frame[seed_columns].notna().sum(axis=1)
    params = sorted(c for c in frame if c.startswith(PARAM_PREFIX))
    for column in params:
        frame[column] = cast_param(frame[column])
    first = ["run_id", "run_name", "kind", "state", "status", "trial", "seed", "n_seeds"]
    first += ["objective", *seed_columns, "reason", "parent_run_id", "start_time"]
    ordered = [c for c in first if c in frame] + params
    # settings no row has (a sweep's trial numbers, say) go; the outcome columns stay
    empty = [c for c in ordered if c not in ESSENTIAL and frame[c].isna().all()]
    frame = frame[ordered].drop(columns=empty)
    sort = [c for c in ("trial", "seed", "start_time") if c in frame]
    return frame.sort_values(sort, kind="stable").reset_index(drop=True)


def _parse(text: object) -> object:
    """An MLflow param string as the value it was: None, bool, int, float or str."""
    if not isinstance(text, str):
        return text
    if text == "None":
        return None
    if text in ("True", "False"):
        return text == "True"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def cast_param(values: pd.Series) -> pd.Series:
    """One hyperparameter column, from MLflow's strings to one dtype.

    Args:
        values: the strings MLflow stored (missing values allowed).

    Returns:
        Int64 if every value is an integer, float64 if every value is a number,
        boolean if every value is a bool, else the parsed values as objects.
    """
    parsed = values.map(_parse)
    present = parsed.dropna()
    if len(present) and present.map(lambda v: isinstance(v, bool)).all():
        return parsed.astype("boolean")
    numbers = present.map(lambda v: isinstance(v, (int, float)) and not isinstance(v, bool))
    if len(present) and numbers.all():
        if present.map(lambda v: isinstance(v, int)).all():
            return parsed.astype("Int64")
        return parsed.astype("float64")
    return parsed.astype(object)
