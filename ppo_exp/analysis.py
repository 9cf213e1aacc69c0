"""Sensitivity analysis of studies and sweeps, read back from MLflow as pandas tables.

The notebooks in `analysis/` are thin: every number they show comes from here.

- `load_runs`: one tidy row per trial of a study (or per run of a sweep), with the
  hyperparameters as typed columns named like the config keys (`params.clip_eps`),
  the objective, the trial state, the seeds and the run ids;
- per hyperparameter: `binned_means` (mean objective per value range, with a
  confidence interval over seeds and trials) and `rank_correlations` (Spearman);
- `bootstrap_importance`: fANOVA importance resampled over trials, mean and CI;
- `interaction_table`: the mean objective over a grid of two binned parameters;
- `learning_curves`: metric histories of chosen runs, as a long table;
- `conclusions`: a few sentences written from the numbers above;
- `plot_*`: matplotlib figures of these tables (`Figure` objects: no global state);
- `render`, also a command, executes a notebook with parameters and saves it as a
  standalone HTML report:

      python -m ppo_exp.analysis render --study core --tracking-uri sqlite:///mlflow.db \\
          --out analysis/reports/core.html
"""

from __future__ import annotations

import argparse
import ast
import math
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullFormatter
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from scipy import stats

PARAM_PREFIX = "params."  # hyperparameter columns: config key = MLflow param = params.<key>
SEED_PREFIX = "objective.seed_"  # per-seed objective columns of a trial: objective.seed_<s>
DEFAULT_OBJECTIVE = "eval/score_auc"  # the default study objective (studies/core.yaml)
DEFAULT_PAIR = ("clip_eps", "ppo_epochs")
CURVE_METRICS = (
    "objective/reward_mean",
    "objective/kl",
    "objective/entropy",
    "policy/clipfrac",
    "value/explained_var",
)
# A run's MLflow status as a trial state: the sweeper ends pruned runs KILLED.
STATE_OF_STATUS = {
    "FINISHED": "COMPLETE",
    "KILLED": "PRUNED",
    "FAILED": "FAIL",
    "RUNNING": "RUNNING",
    "SCHEDULED": "RUNNING",
}
NOTEBOOKS = Path(__file__).resolve().parents[1] / "analysis"


# -- loading ---------------------------------------------------------------------------


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
    """
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
        or (configured.mode().iloc[0] if len(configured) else DEFAULT_OBJECTIVE)
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
        return pd.DataFrame(columns=["run_id", "run_name", "kind", "state", "objective"])
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
    frame = frame[ordered].dropna(axis=1, how="all")
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


# -- selecting ---------------------------------------------------------------------------


def param_key(name: str) -> str:
    """The config key of a hyperparameter given as `lr` or `params.lr`."""
    return name.removeprefix(PARAM_PREFIX)


def param_column(name: str) -> str:
    """The DataFrame column of a hyperparameter given as `lr` or `params.lr`."""
    return PARAM_PREFIX + param_key(name)


def hyperparameters(frame: pd.DataFrame) -> list[str]:
    """The config keys whose values differ between the rows (what was searched or swept).

    Args:
        frame: a `load_runs` table.

    Returns:
        Keys such as "lr", in column order; constant settings are left out.
    """
    return [
        param_key(c)
        for c in frame
        if c.startswith(PARAM_PREFIX) and frame[c].dropna().astype(str).nunique() > 1
    ]


def complete(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows that finished with an objective value (COMPLETE trials or runs)."""
    return frame[frame["state"].eq("COMPLETE") & frame["objective"].notna()]


def per_seed(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per (trial, seed): the observations behind each trial's mean objective.

    Args:
        trials: a `load_runs` table of trials with `objective.seed_<s>` columns; a table
            without them (e.g. of runs) is returned unchanged.

    Returns:
        The trial columns with `seed` and `objective` (that seed's value) instead of
        the per-seed columns; seeds without a value (not run, pruned) are dropped.
    """
    seed_columns = [c for c in trials if c.startswith(SEED_PREFIX)]
    if not seed_columns:
        return trials
    keep = [c for c in trials if c not in seed_columns and c != "objective"]
    long = trials.drop(columns="objective").melt(
        id_vars=keep, value_vars=seed_columns, var_name="seed", value_name="objective"
    )
    long["seed"] = long["seed"].str.removeprefix(SEED_PREFIX).astype("Int64")
    long = long.dropna(subset=["objective"])
    return long.sort_values(["trial", "seed"], kind="stable").reset_index(drop=True)


def pick_configs(trials: pd.DataFrame, n: int = 1, *, direction: str = "maximize") -> pd.DataFrame:
    """The `n` best and `n` worst complete rows, labelled for plots.

    Args:
        trials: a `load_runs` table.
        n: how many of each.
        direction: "maximize" or "minimize" the objective.

    Returns:
        Rows with a `group` ("best" | "worst") and a `label` (e.g. "best #3: 0.42"),
        best first; a row is never both.
    """
    done = complete(trials).sort_values("objective", ascending=direction == "minimize")
    best = done.head(n).assign(group="best")
    worst = done.drop(best.index).tail(n).iloc[::-1].assign(group="worst")
    picked = pd.concat([best, worst])
    picked["label"] = [
        f"{group} {_name(row)}: {row.objective:.3g}"
        for group, (_, row) in zip(picked["group"], picked.iterrows(), strict=True)
    ]
    return picked


def unfinished(trials: pd.DataFrame) -> pd.DataFrame:
    """The pruned and failed rows, labelled with their state and reason."""
    rows = trials[trials["state"].isin(["PRUNED", "FAIL"])].copy()
    rows["group"] = rows["state"].str.lower()
    reasons = rows["reason"] if "reason" in rows else pd.Series("", index=rows.index)
    rows["label"] = [
        f"{state.lower()} {_name(row)}" + (f": {reason[:60]}" if isinstance(reason, str) else "")
        for state, reason, (_, row) in zip(rows["state"], reasons, rows.iterrows(), strict=True)
    ]
    return rows


def _name(row: pd.Series) -> str:
    """'#3' for trial 3, else the run name."""
    trial = row.get("trial")
    return f"#{trial}" if trial is not None and not pd.isna(trial) else str(row["run_name"])


def config_labels(runs: pd.DataFrame, params: Sequence[str] | None = None) -> pd.Series:
    """A readable label per row from the varied hyperparameters, e.g. 'clip_eps=0.1 seed=0'.

    Args:
        runs: a `load_runs` table.
        params: the keys to show; None = `hyperparameters(runs)`.

    Returns:
        One string per row (the run name when nothing varies).
    """
    params = hyperparameters(runs) if params is None else list(params)
    show_seed = "seed" in runs and runs["seed"].nunique() > 1

    def label(row: pd.Series) -> str:
        parts = [f"{key}={format_value(row[param_column(key)])}" for key in params]
        if show_seed:
            parts.append(f"seed={row['seed']}")
        return " ".join(parts) or str(row["run_name"])

    return runs.apply(label, axis=1)


def label_runs(runs: pd.DataFrame, picked: pd.DataFrame) -> pd.DataFrame:
    """The training runs of the picked trials, with the trials' `group` and `label`.

    Args:
        runs: `load_runs(..., study=..., kind="run")`, one row per seed run.
        picked: rows of `pick_configs` or `unfinished` (trials).

    Returns:
        The runs of those trials, in the order of `picked`.
    """
    labels = picked[["trial", "group", "label"]]
    return labels.merge(runs, on="trial", how="inner")


# -- statistics --------------------------------------------------------------------------


def format_value(value: object) -> str:
    """A hyperparameter value for text: integers as is, floats to 3 significant digits."""
    if isinstance(value, (bool, np.bool_)) or value is None:
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.3g}"
    return str(value)


def is_log_scale(values: pd.Series) -> bool:
    """Whether a numeric hyperparameter spans orders of magnitude (like lr): plot it on a log axis.

    Args:
        values: the observed values.

    Returns:
        True if every value is positive and the largest is at least 20 times the smallest.
    """
    numbers = pd.to_numeric(values, errors="coerce").dropna()
    return bool(len(numbers)) and numbers.min() > 0 and numbers.max() / numbers.min() >= 20


def _is_numeric(values: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)


def bin_values(values: pd.Series, bins: int = 4) -> pd.Series:
    """The bin of each value, as an ordered categorical labelled by the range it holds.

    Numbers with more distinct values than `bins` fall into `bins` quantile bins (equal
    counts, so every bin gets a CI; quantiles also respect a log scale); otherwise, and
    for categories, every distinct value is its own bin.

    Args:
        values: one hyperparameter column.
        bins: the most bins wanted.

    Returns:
        Labels such as "0.05–0.12" (the smallest and largest value in the bin) or "4",
        ordered by value, aligned with `values`.
    """
    present = values.dropna()
    if not _is_numeric(values) or present.nunique() <= bins:
        order = sorted(present.unique(), key=lambda v: (str(type(v)), v))
        labels = {v: format_value(v) for v in order}
        return pd.Series(
            pd.Categorical(values.map(labels), categories=list(labels.values()), ordered=True),
            index=values.index,
        )
    codes = pd.qcut(values.astype(float), bins, labels=False, duplicates="drop")
    spans = values.groupby(codes).agg(["min", "max"])
    names = {
        code: format_value(low) if low == high else f"{format_value(low)}–{format_value(high)}"
        for code, (low, high) in spans.iterrows()
    }
    return pd.Series(
        pd.Categorical(codes.map(names), categories=list(names.values()), ordered=True),
        index=values.index,
    )


def mean_ci(values: Iterable[float], level: float = 0.95) -> tuple[float, float, float]:
    """The mean and its Student-t confidence interval.

    Args:
        values: independent observations.
        level: the interval's coverage.

    Returns:
        (mean, low, high); the bounds are NaN for fewer than two values.
    """
    data = np.asarray([v for v in values if not pd.isna(v)], dtype=float)
    if len(data) == 0:
        return math.nan, math.nan, math.nan
    mean = float(data.mean())
    if len(data) < 2:
        return mean, math.nan, math.nan
    half = stats.t.ppf(0.5 + level / 2, len(data) - 1) * data.std(ddof=1) / math.sqrt(len(data))
    return mean, mean - half, mean + half


def binned_means(
    observations: pd.DataFrame, param: str, *, bins: int = 4, level: float = 0.95
) -> pd.DataFrame:
    """Mean objective per value range of one hyperparameter, with confidence intervals.

    Args:
        observations: rows with `objective` and the parameter column; pass `per_seed`
            of complete trials so that each seed counts as one observation.
        param: the hyperparameter ("lr" or "params.lr").
        bins: the most bins wanted (see `bin_values`).
        level: the coverage of the intervals.

    Returns:
        One row per bin, in value order: bin (label), low, high, center (mean value in
        the bin; the label for categories), n, mean, ci_low, ci_high.
    """
    column = param_column(param)
    data = observations.dropna(subset=[column, "objective"])
    binned = bin_values(data[column], bins)
    rows = []
    for label, group in data.groupby(binned, observed=True, sort=True):
        mean, low, high = mean_ci(group["objective"], level)
        values = group[column]
        numeric = _is_numeric(values)
        rows.append(
            {
                "bin": label,
                "low": values.min() if numeric else label,
                "high": values.max() if numeric else label,
                "center": float(values.mean()) if numeric else label,
                "n": len(group),
                "mean": mean,
                "ci_low": low,
                "ci_high": high,
            }
        )
    return pd.DataFrame(
        rows, columns=["bin", "low", "high", "center", "n", "mean", "ci_low", "ci_high"]
    )


def rank_correlations(frame: pd.DataFrame, params: Sequence[str] | None = None) -> pd.DataFrame:
    """Spearman rank correlation of each numeric hyperparameter with the objective.

    Args:
        frame: rows with `objective` (use complete trials: one value per configuration).
        params: the keys; None = `hyperparameters(frame)`.

    Returns:
        Columns param, rho, p_value, n, strongest |rho| first; NaN where a parameter is
        categorical, constant, or has fewer than three values.
    """
    params = hyperparameters(frame) if params is None else [param_key(p) for p in params]
    rows = []
    for key in params:
        data = frame[[param_column(key), "objective"]].dropna()
        x = data[param_column(key)]
        rho = p_value = math.nan
        if (
            _is_numeric(x)
            and len(data) >= 3
            and x.nunique() > 1
            and data["objective"].nunique() > 1
        ):
            rho, p_value = stats.spearmanr(x.astype(float), data["objective"])
        rows.append({"param": key, "rho": float(rho), "p_value": float(p_value), "n": len(data)})
    table = pd.DataFrame(rows, columns=["param", "rho", "p_value", "n"])
    order = table["rho"].abs().sort_values(ascending=False, na_position="last").index
    return table.loc[order].reset_index(drop=True)


# -- importance --------------------------------------------------------------------------


def _distributions(
    frame: pd.DataFrame, params: Sequence[str], log_params: Iterable[str] | None
) -> dict[str, BaseDistribution]:
    """Optuna distributions spanning the observed values (constant parameters left out)."""
    found: dict[str, BaseDistribution] = {}
    for key in params:
        values = frame[param_column(key)].dropna()
        if values.astype(str).nunique() < 2:
            continue
        if not _is_numeric(values):
            found[key] = CategoricalDistribution(sorted(values.unique(), key=str))
            continue
        log = is_log_scale(values) if log_params is None else key in set(log_params)
        if pd.api.types.is_integer_dtype(values):
            found[key] = IntDistribution(int(values.min()), int(values.max()), log=log)
        else:
            found[key] = FloatDistribution(float(values.min()), float(values.max()), log=log)
    return found


def _importances(
    frame: pd.DataFrame,
    distributions: dict[str, BaseDistribution],
    evaluator: str,
    direction: str,
    seed: int,
) -> dict[str, float]:
    """One importance estimate: an in-memory study rebuilt from the rows, then evaluated."""
    trials = []
    for _, row in frame.iterrows():
        params = {}
        for key, dist in distributions.items():
            value = row[param_column(key)]
            if pd.isna(value):
                continue
            params[key] = int(value) if isinstance(dist, IntDistribution) else value
            if isinstance(dist, FloatDistribution):
                params[key] = float(value)
        trials.append(
            optuna.trial.create_trial(
                params=params,
                distributions={k: distributions[k] for k in params},
                value=float(row["objective"]),
            )
        )
    study = optuna.create_study(direction=direction)
    study.add_trials(trials)
    chosen = (
        optuna.importance.FanovaImportanceEvaluator(n_trees=32, seed=seed)
        if evaluator == "fanova"
        else optuna.importance.PedAnovaImportanceEvaluator()
    )
    scores = optuna.importance.get_param_importances(
        study, evaluator=chosen, params=list(distributions)
    )
    return {key: float(value) for key, value in scores.items()}


def bootstrap_importance(
    trials: pd.DataFrame,
    params: Sequence[str] | None = None,
    *,
    n_boot: int = 100,
    level: float = 0.95,
    evaluator: str = "fanova",
    direction: str = "maximize",
    log_params: Iterable[str] | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Hyperparameter importance with its uncertainty: a bootstrap over trials.

    Each replicate resamples the complete trials with replacement, rebuilds an Optuna
    study from them and asks Optuna's evaluator for normalised importances (they sum
    to 1), so the spread shows how much the ranking owes to which trials happened to run.

    Args:
        trials: a `load_runs` table of trials (only complete ones are used).
        params: the keys to rank; None = `hyperparameters(trials)`.
        n_boot: bootstrap replicates (fANOVA takes ~0.1 s each).
        level: the coverage of the percentile intervals.
        evaluator: "fanova" (random-forest variance decomposition) or "ped_anova".
        direction: the objective's direction ("maximize" | "minimize"), used by PED-ANOVA.
        log_params: keys searched on a log scale; None = guess with `is_log_scale`.
        seed: seeds the resampling and the forests.

    Returns:
        Columns param, mean, ci_low, ci_high, rank (1 = most important), ranked;
        empty with fewer than three complete trials.
    """
    done = complete(trials)
    params = hyperparameters(done) if params is None else [param_key(p) for p in params]
    columns = ["param", "mean", "ci_low", "ci_high", "rank"]
    distributions = _distributions(done, params, log_params)
    if len(done) < 3 or not distributions:
        return pd.DataFrame(columns=columns)
    rng = np.random.default_rng(seed)
    samples = []
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one "study created" line per replicate
    try:
        for replicate in range(n_boot):
            sample = done.iloc[rng.integers(0, len(done), len(done))]
            if sample["objective"].nunique() < 2:
                continue  # nothing to explain in this replicate
            samples.append(
                _importances(sample, distributions, evaluator, direction, seed + replicate)
            )
    finally:
        optuna.logging.set_verbosity(verbosity)
    scores = pd.DataFrame(samples, columns=list(distributions)).fillna(0.0)
    tail = (1 - level) / 2
    table = pd.DataFrame(
        {
            "param": scores.columns,
            "mean": scores.mean().to_numpy(),
            "ci_low": scores.quantile(tail).to_numpy(),
            "ci_high": scores.quantile(1 - tail).to_numpy(),
        }
    )
    table = table.sort_values("mean", ascending=False, kind="stable").reset_index(drop=True)
    table["rank"] = np.arange(1, len(table) + 1)
    return table[columns]


# -- interactions ----------------------------------------------------------------------


def interaction_table(
    observations: pd.DataFrame,
    pair: Sequence[str] = DEFAULT_PAIR,
    *,
    bins: int = 3,
    stat: str = "mean",
) -> pd.DataFrame:
    """The objective over a grid of two binned hyperparameters (heat-map data).

    Args:
        observations: rows with `objective` and both parameter columns.
        pair: (row parameter, column parameter), as keys or columns.
        bins: the most bins per parameter.
        stat: "mean", "count" or "std" of the objective in each cell.

    Returns:
        A table indexed by the first parameter's bins, with the second's as columns
        (both named after their key); empty cells are NaN (0 for "count").

    Raises:
        KeyError: a parameter of the pair is not a column.
    """
    rows_key, cols_key = (param_key(p) for p in pair)
    missing = [k for k in (rows_key, cols_key) if param_column(k) not in observations]
    if missing:
        raise KeyError(f"no hyperparameter column for {', '.join(missing)}")
    data = observations.dropna(subset=[param_column(rows_key), param_column(cols_key), "objective"])
    grid = data.assign(
        **{
            rows_key: bin_values(data[param_column(rows_key)], bins),
            cols_key: bin_values(data[param_column(cols_key)], bins),
        }
    )
    table = grid.pivot_table(
        index=rows_key, columns=cols_key, values="objective", aggfunc=stat, observed=False
    )
    return table.fillna(0).astype(int) if stat == "count" else table


def has_params(frame: pd.DataFrame, keys: Iterable[str]) -> bool:
    """Whether every key is a varied hyperparameter of the table."""
    varied = set(hyperparameters(frame))
    return all(param_key(k) in varied for k in keys)


# -- learning curves ----------------------------------------------------------------------


def metric_histories(
    tracking_uri: str | None, run_ids: Iterable[str], metrics: Sequence[str] = CURVE_METRICS
) -> pd.DataFrame:
    """Every logged value of some metrics of some runs, as a long table.

    Args:
        tracking_uri: MLflow store (None = MLflow's default).
        run_ids: the runs (training runs: trials and sweeps log no histories).
        metrics: metric names.

    Returns:
        Columns run_id, step, metric, value, in the order of `run_ids` and `metrics`
        then by step; a metric a run never logged is simply absent.
    """
    client = MlflowClient(tracking_uri=tracking_uri)
    rows = [
        {"run_id": run_id, "step": point.step, "metric": metric, "value": point.value}
        for run_id in run_ids
        for metric in metrics
        for point in sorted(client.get_metric_history(run_id, metric), key=lambda m: m.step)
    ]
    # rows are in the order asked for (runs, then metrics), so plots keep that order too
    return pd.DataFrame(rows, columns=["run_id", "step", "metric", "value"])


def learning_curves(
    tracking_uri: str | None, runs: pd.DataFrame, metrics: Sequence[str] = CURVE_METRICS
) -> pd.DataFrame:
    """`metric_histories` of the rows of `runs`, with their descriptive columns.

    Args:
        tracking_uri: MLflow store (None = MLflow's default).
        runs: training-run rows (e.g. `label_runs(...)` or a sweep's `load_runs`).
        metrics: metric names.

    Returns:
        Columns run_id, step, metric, value, plus run_name, state, trial, seed, group
        and label where `runs` has them.
    """
    histories = metric_histories(tracking_uri, runs["run_id"], metrics)
    info = [
        c for c in ("run_id", "run_name", "state", "trial", "seed", "group", "label") if c in runs
    ]
    return histories.merge(runs[info], on="run_id", how="left")


# -- conclusions ---------------------------------------------------------------------------


def conclusions(
    trials: pd.DataFrame,
    importance: pd.DataFrame,
    *,
    objective_name: str = "objective",
    direction: str = "maximize",
    bins: int = 4,
    level: float = 0.95,
) -> str:
    """A few sentences on what the study found, written from the numbers.

    Args:
        trials: a `load_runs` table of trials (or runs).
        importance: `bootstrap_importance` of the same table.
        objective_name: how to call the objective in the text.
        direction: "maximize" or "minimize".
        bins: bins of the good-range sentence (as in `binned_means`).
        level: the coverage quoted for intervals.

    Returns:
        Plain text, one finding per line.
    """
    done = complete(trials)
    lines = [_summary(trials, done, objective_name, direction)]
    if len(done) < 3 or importance.empty:
        lines.append(f"Too few complete trials ({len(done)}) to rank hyperparameters yet.")
        return "\n".join(lines)
    lines.append(_ranking(importance, level))
    top = importance.iloc[0]["param"]
    lines.append(_good_range(per_seed(done), top, objective_name, direction, bins))
    lines.append(_correlations(done, objective_name, direction))
    if noise := _seed_noise(done):
        lines.append(noise)
    lines.append(_best(done, objective_name, direction))
    weak = importance[importance["ci_high"] < 0.1]["param"].tolist()
    if weak:
        lines.append(
            f"Little effect ({level:.0%} CI of the importance below 0.1): {', '.join(weak)}; "
            "any value in the searched range will do."
        )
    return "\n".join(lines)


def _summary(trials: pd.DataFrame, done: pd.DataFrame, objective_name: str, direction: str) -> str:
    counts = trials["state"].value_counts()
    parts = [f"{counts.get(s, 0)} {s.lower()}" for s in ("PRUNED", "FAIL") if counts.get(s, 0)]
    what = "trials" if trials["kind"].eq("trial").all() else "runs"
    detail = f"{len(done)} complete" + "".join(f", {p}" for p in parts)
    return f"{len(trials)} {what} ({detail}), objective {objective_name} ({direction})."


def _ranking(importance: pd.DataFrame, level: float) -> str:
    top = importance.iloc[0]
    text = (
        f"Most important: {top['param']} (fANOVA importance {top['mean']:.2f}, "
        f"{level:.0%} CI {top['ci_low']:.2f}–{top['ci_high']:.2f})"
    )
    if len(importance) == 1:
        return text + "."
    runner = importance.iloc[1]
    others = (
        f"{runner['param']} ({runner['mean']:.2f}, "
        f"CI {runner['ci_low']:.2f}–{runner['ci_high']:.2f})"
    )
    if top["ci_low"] > importance.iloc[1:]["ci_high"].max():
        return f"{text}, clearly ahead of the next, {others}."
    return (
        f"{text}, then {others}: the intervals overlap, so the ranking is not settled yet "
        "(more trials would narrow them)."
    )


def _good_range(
    observations: pd.DataFrame, key: str, objective_name: str, direction: str, bins: int
) -> str:
    table = binned_means(observations, key, bins=bins)
    best = table["mean"].idxmax() if direction == "maximize" else table["mean"].idxmin()
    worst = table["mean"].idxmin() if direction == "maximize" else table["mean"].idxmax()
    good, bad = table.loc[best], table.loc[worst]
    ci = f", CI {good['ci_low']:.3g}–{good['ci_high']:.3g}" if not pd.isna(good["ci_low"]) else ""
    return (
        f"Good range of {key}: {good['bin']} (mean {objective_name} {good['mean']:.3g}{ci}, "
        f"n={good['n']}), against {bad['mean']:.3g} for {bad['bin']}."
    )


def _correlations(done: pd.DataFrame, objective_name: str, direction: str) -> str:
    table = rank_correlations(done).dropna(subset=["rho"])
    if table.empty:
        return "No rank correlation could be computed."
    parts = []
    for _, row in table.iterrows():
        text = f"{row['param']} ρ={row['rho']:+.2f}"
        if row["p_value"] < 0.05:
            better = (row["rho"] > 0) == (direction == "maximize")
            text += f" (p={row['p_value']:.2g}: {'higher' if better else 'lower'} is better)"
        parts.append(text)
    return f"Spearman rank correlation with {objective_name}: " + ", ".join(parts) + "."


def _seed_noise(done: pd.DataFrame) -> str | None:
    """Whether trials differ beyond seed noise: a one-way ANOVA of the seeds over trials."""
    seed_columns = [c for c in done if c.startswith(SEED_PREFIX)]
    groups = [row.dropna().to_numpy() for _, row in done[seed_columns].iterrows()]
    groups = [g for g in groups if len(g) >= 2]
    if len(groups) < 2:
        return None
    p_value = float(stats.f_oneway(*groups).pvalue)
    within = float(np.mean([g.std(ddof=1) for g in groups]))
    if p_value < 0.05:
        return f"Trials differ beyond seed noise (one-way ANOVA over seeds, p={p_value:.2g})."
    return (
        f"Trials cannot be told apart from seed noise (one-way ANOVA over seeds, "
        f"p={p_value:.2g}; seed-to-seed std {within:.3g}): read the ranges above as hints, "
        "and add seeds or longer runs to confirm them."
    )


def _best(done: pd.DataFrame, objective_name: str, direction: str) -> str:
    best = pick_configs(done, 1, direction=direction).iloc[0]
    values = ", ".join(f"{k}={format_value(best[param_column(k)])}" for k in hyperparameters(done))
    return f"Best {_name(best)}: {objective_name}={best['objective']:.3g} with {values}."


# -- figures ---------------------------------------------------------------------------


def _grid(count: int, ncols: int, size: tuple[float, float]) -> tuple[Figure, list]:
    """A figure with `count` axes on a grid (spare axes hidden)."""
    ncols = max(1, min(ncols, count))
    nrows = max(1, math.ceil(count / ncols))
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax in axes[count:]:
        ax.set_visible(False)
    return fig, axes[:count]


def plot_param_effects(
    observations: pd.DataFrame,
    params: Sequence[str] | None = None,
    *,
    bins: int = 4,
    level: float = 0.95,
    correlations: pd.DataFrame | None = None,
    objective_name: str = "objective",
) -> Figure:
    """Objective against each hyperparameter: raw points, bin means and their CIs.

    Args:
        observations: per-seed rows (see `per_seed`).
        params: the keys; None = `hyperparameters(observations)`.
        bins: bins per parameter (see `binned_means`).
        level: the coverage of the error bars.
        correlations: `rank_correlations`, to quote ρ in the titles.
        objective_name: the y label.

    Returns:
        One panel per parameter.
    """
    params = hyperparameters(observations) if params is None else [param_key(p) for p in params]
    rho = (
        {}
        if correlations is None
        else dict(zip(correlations["param"], correlations["rho"], strict=True))
    )
    fig, axes = _grid(len(params), 3, (4.2, 3.2))
    for ax, key in zip(axes, params, strict=True):
        column = param_column(key)
        data = observations.dropna(subset=[column, "objective"])
        x = data[column].astype(float) if _is_numeric(data[column]) else data[column].astype(str)
        ax.scatter(x, data["objective"], s=14, alpha=0.35, color="tab:gray", label="one seed")
        table = binned_means(data, key, bins=bins, level=level)
        errors = [
            (table["mean"] - table["ci_low"]).fillna(0).clip(lower=0),
            (table["ci_high"] - table["mean"]).fillna(0).clip(lower=0),
        ]
        centers = table["center"] if _is_numeric(data[column]) else table["center"].astype(str)
        ax.errorbar(
            centers,
            table["mean"],
            yerr=errors,
            fmt="o-",
            color="tab:blue",
            capsize=3,
            label=f"bin mean, {level:.0%} CI",
        )
        if _is_numeric(data[column]) and is_log_scale(data[column]):
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # labelled minor ticks overlap
        elif pd.api.types.is_integer_dtype(data[column]):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        title = key if pd.isna(rho.get(key, math.nan)) else f"{key}   ρ = {rho[key]:+.2f}"
        ax.set(title=title, xlabel=key, ylabel=objective_name)
    if axes:
        axes[0].legend(fontsize="small")
    return fig


def plot_importance(importance: pd.DataFrame, *, level: float = 0.95) -> Figure:
    """Importance bars, most important on top, with bootstrap CIs as error bars."""
    table = importance.iloc[::-1]
    fig = Figure(figsize=(5.5, 0.45 * len(table) + 1.2), layout="constrained")
    ax = fig.subplots()
    errors = [table["mean"] - table["ci_low"], table["ci_high"] - table["mean"]]
    ax.barh(table["param"], table["mean"], xerr=errors, color="tab:blue", capsize=3)
    ax.set(xlim=(0, 1), xlabel=f"fANOVA importance (bootstrap mean, {level:.0%} CI)")
    return fig


def plot_interaction(
    means: pd.DataFrame, counts: pd.DataFrame | None = None, *, objective_name: str = "objective"
) -> Figure:
    """A heat map of `interaction_table` means, each cell annotated with its mean and count."""
    fig = Figure(
        figsize=(1.3 * len(means.columns) + 2.5, 1.0 * len(means) + 1.5), layout="constrained"
    )
    ax = fig.subplots()
    image = ax.imshow(
        np.ma.masked_invalid(means.to_numpy(dtype=float)),
        cmap="viridis",
        origin="lower",
        aspect="auto",
    )
    ax.set_xticks(range(len(means.columns)), [str(c) for c in means.columns])
    ax.set_yticks(range(len(means.index)), [str(i) for i in means.index])
    ax.set(xlabel=means.columns.name, ylabel=means.index.name)
    for i, j in np.ndindex(means.shape):
        value = means.iat[i, j]
        if pd.isna(value):
            continue
        text = f"{value:.3g}" + (f"\nn={counts.iat[i, j]}" if counts is not None else "")
        ax.text(j, i, text, ha="center", va="center", color="white", fontsize="small")
    fig.colorbar(image, ax=ax, label=f"mean {objective_name}")
    return fig


def plot_learning_curves(
    curves: pd.DataFrame, metrics: Sequence[str] | None = None, *, hue: str = "label"
) -> Figure:
    """One panel per metric, one line per run, coloured by `hue` (line style by seed).

    Args:
        curves: `learning_curves` output.
        metrics: the panels; None = every metric in `curves`.
        hue: the column that names a line's colour (runs of one label share it).

    Returns:
        The figure, with one legend.
    """
    metrics = list(dict.fromkeys(curves["metric"])) if metrics is None else list(metrics)
    hue = hue if hue in curves else "run_id"
    names = list(dict.fromkeys(curves[hue].astype(str)))
    colors = {name: f"C{i % 10}" for i, name in enumerate(names)}
    seeds = sorted(curves["seed"].dropna().unique()) if "seed" in curves else []
    styles = {seed: ("-", "--", ":", "-.")[i % 4] for i, seed in enumerate(seeds)}
    fig, axes = _grid(len(metrics), 3, (4.2, 3.0))
    for ax, metric in zip(axes, metrics, strict=True):
        for _, line in curves[curves["metric"] == metric].groupby("run_id", sort=False):
            name = str(line[hue].iloc[0])
            seed = line["seed"].iloc[0] if "seed" in line else None
            ax.plot(
                line["step"],
                line["value"],
                color=colors[name],
                linestyle=styles.get(seed, "-"),
                marker=".",
                label=name,
            )
        ax.set(title=metric, xlabel="iteration")
    handles = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    if handles:
        fig.legend(
            handles.values(),
            handles.keys(),
            loc="outside lower center",
            ncols=min(3, len(handles)),
            fontsize="small",
        )
    return fig


# -- rendering ---------------------------------------------------------------------------


def notebook_path(name: str | Path) -> Path:
    """A notebook given as a path, or by name from the repository's analysis/ folder."""
    path = Path(name)
    if path.suffix == ".ipynb" and path.exists():
        return path
    return NOTEBOOKS / f"{path.stem}.ipynb"


def inject_parameters(notebook: Any, parameters: dict[str, Any]) -> Any:
    """Add a cell assigning `parameters` after the cell tagged `parameters` (papermill-style).

    Args:
        notebook: an nbformat notebook (modified in place).
        parameters: names and Python literals.

    Returns:
        The notebook.
    """
    import nbformat

    source = "# Parameters\n" + "".join(f"{k} = {v!r}\n" for k, v in parameters.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    tagged = [
        i
        for i, c in enumerate(notebook.cells)
        if "parameters" in c.get("metadata", {}).get("tags", [])
    ]
    notebook.cells.insert(tagged[0] + 1 if tagged else 0, cell)
    return notebook


def execute_notebook(
    name: str | Path,
    parameters: dict[str, Any] | None = None,
    *,
    cwd: str | Path | None = None,
    timeout: int = 900,
) -> Any:
    """Run a notebook headless, top to bottom, with injected parameters.

    Args:
        name: a notebook path or name (see `notebook_path`).
        parameters: values for its `parameters` cell.
        cwd: the kernel's working directory (relative tracking URIs resolve there);
            None = the current one.
        timeout: seconds allowed per cell.

    Returns:
        The executed nbformat notebook, outputs included.

    Raises:
        nbclient.exceptions.CellExecutionError: a cell raised.
    """
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(notebook_path(name), as_version=4)
    inject_parameters(notebook, parameters or {})
    client = NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(Path(cwd or Path.cwd()).resolve())}},
    )
    client.execute()
    return notebook


def render(
    name: str | Path,
    out: str | Path,
    parameters: dict[str, Any] | None = None,
    *,
    cwd: str | Path | None = None,
    exclude_input: bool = False,
) -> Path:
    """Execute a notebook and save it as one standalone HTML file (figures embedded).

    Args:
        name: a notebook path or name (see `notebook_path`).
        out: the HTML file to write (folders are created).
        parameters: values for its `parameters` cell.
        cwd: the kernel's working directory.
        exclude_input: hide the code cells, keeping only their outputs.

    Returns:
        The path written.
    """
    from nbconvert import HTMLExporter

    notebook = execute_notebook(name, parameters, cwd=cwd)
    exporter = HTMLExporter(template_name="lab", exclude_input=exclude_input)
    html, _ = exporter.from_notebook_node(notebook)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html, encoding="utf-8")
    return out


def _literal(text: str) -> Any:
    """A command-line value as a Python literal when it is one, else as a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m ppo_exp.analysis render ...`: execute a notebook into an HTML report."""
    parser = argparse.ArgumentParser(
        prog="python -m ppo_exp.analysis", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    cmd = commands.add_parser("render", help="execute a notebook and save it as standalone HTML")
    cmd.add_argument("--study", help="study name (or 'latest'): renders analysis/sensitivity.ipynb")
    cmd.add_argument("--sweep", help="sweep parent run id (or 'latest'): renders learning_curves")
    cmd.add_argument("--tracking-uri", help="MLflow store; default: $MLFLOW_TRACKING_URI")
    cmd.add_argument("--experiment", default="ppo_exp", help="MLflow experiment (ppo_exp)")
    cmd.add_argument("--notebook", help="notebook name in analysis/ or path (default from above)")
    cmd.add_argument("--out", required=True, help="HTML file to write")
    cmd.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="another notebook parameter (a Python literal or a string)",
    )
    cmd.add_argument("--no-input", action="store_true", help="hide the code cells")
    args = parser.parse_args(argv)
    if not (args.study or args.sweep or args.notebook):
        parser.error("render needs --study, --sweep or --notebook")
    notebook = args.notebook or ("sensitivity" if args.study else "learning_curves")
    parameters: dict[str, Any] = {"tracking_uri": args.tracking_uri, "experiment": args.experiment}
    if args.study:
        parameters["study"] = args.study
    if args.sweep:
        parameters["sweep"] = args.sweep
    for item in args.param:
        key, _, value = item.partition("=")
        parameters[key] = _literal(value)
    out = render(notebook, args.out, parameters, exclude_input=args.no_input)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
