"""What a study found, logged on its MLflow parent run (at the end, or on demand).

MLflow's UI has no importance panel, so the parent run carries the report:
- its Description (Overview, first thing on the page): trials, best trial, the
  importance ranking with intervals and what holds, links to the figures
  (`ppo_exp.study.description`);
- figures under `study/`, each as self-contained HTML and a PNG twin
  (`ppo_exp.study.figures`), and the trials table `trials.csv`;
- metrics, logged with step = the number of complete trials so that a running or
  resumed study draws a trend: `importance.<param>` (PED-ANOVA, Optuna's default) and
  `importance_fanova.<param>` (for a second objective `importance.<param>.<metric>`),
  `best_value` (or nothing for two objectives: see `pareto_trials`), `best.<param>`,
  `trials.complete/pruned/fail`, the first objective's spread over the complete trials
  `trial_value.min/mean/max/std` (named `objective.*` in older stores) and the
  harness overhead `perf/...`. A report of unchanged numbers logs no new point.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
import warnings
from pathlib import Path

import optuna
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from optuna.trial import FrozenTrial, TrialState

from ppo_exp.study.description import NOTE_TAG, study_description
from ppo_exp.study.figures import write_figures
from ppo_exp.study.summary import EVALUATORS, Summary, point_importances, summarise

log = logging.getLogger("ppo_exp")
importances = point_importances  # the name earlier callers use
REPORT_STEP_TAG = "ppo_exp.report_step"  # the step (complete trials) of the last report


def finish(study: optuna.Study, run_id: str, metrics: list[str]) -> None:
    """Report on the parent run and mark it FINISHED once no trial runs."""
    client = MlflowClient()
    summary = summarise(study, metrics)
    if not summary.complete:
        log.warning("study %s has no complete trial: nothing to rank", study.study_name)
    _log_metrics(client, run_id, report_metrics(summary), step=summary.counts["complete"])
    _log_best_tags(client, run_id, summary)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        folder = Path(tmp) / "study"
        folder.mkdir()
        figures = write_figures(summary, folder)
        table = study.trials_dataframe(multi_index=False)
        (folder / "trials.csv").write_text(table.to_csv(index=False))
        client.log_artifacts(run_id, str(folder), "study")
    n_trials = client.get_run(run_id).data.tags.get("study.n_trials", "?")
    client.set_tag(run_id, NOTE_TAG, study_description(summary, run_id, figures, n_trials))
    if not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        client.set_terminated(run_id, status="FINISHED")
    log.info("study %s reported to MLflow run %s", study.study_name, run_id)


def report_metrics(summary: Summary) -> dict[str, float]:
    """The parent run's metrics for this report (see the module docstring)."""
    values: dict[str, float] = {
        f"trials.{state}": float(summary.counts[state]) for state in ("complete", "pruned", "fail")
    }
    values.update(_wall_split(summary.trials))
    complete = summary.complete
    if not complete:
        return values
    objective = [t.values[0] for t in complete]
    mean = sum(objective) / len(objective)
    std = math.sqrt(sum((v - mean) ** 2 for v in objective) / len(objective))
    values.update(
        {
            "trial_value.min": min(objective),
            "trial_value.mean": mean,
            "trial_value.max": max(objective),
            "trial_value.std": std,
        }
    )
    if len(summary.metrics) == 1:
        best = summary.study.best_trial
        values["best_value"] = best.value
        for key, value in best.params.items():
            if isinstance(value, (int, float)):
                values[f"best.{key}"] = float(value)
    for ranking in summary.rankings:
        for evaluator in EVALUATORS:
            prefix = "importance" if evaluator == "ped_anova" else "importance_fanova"
            for param, score in ranking.points.get(evaluator, {}).items():
                # 3 decimals: the bootstrap intervals are far wider than that
                values[f"{prefix}.{param}{ranking.suffix}"] = round(float(score), 3)
    return values


def _log_metrics(client: MlflowClient, run_id: str, values: dict[str, float], step: int) -> None:
    """Log `values` at `step`, leaving out those already logged there with the same value."""
    run = client.get_run(run_id)
    if run.data.tags.get(REPORT_STEP_TAG) == str(step):
        values = {k: v for k, v in values.items() if run.data.metrics.get(k) != v}
    now = int(time.time() * 1000)
    batch = [Metric(key, value, now, step) for key, value in values.items()]
    for start in range(0, len(batch), 1000):  # MLflow's batch limit
        client.log_batch(run_id, metrics=batch[start : start + 1000])
    client.set_tag(run_id, REPORT_STEP_TAG, str(step))


def _log_best_tags(client: MlflowClient, run_id: str, summary: Summary) -> None:
    if not summary.complete:
        return
    if len(summary.metrics) == 1:
        best = summary.study.best_trial
        client.set_tag(run_id, "best_trial", str(best.number))
        for key, value in best.params.items():
            client.set_tag(run_id, f"best.{key}", str(value))
    else:
        numbers = ",".join(str(t.number) for t in summary.study.best_trials)
        client.set_tag(run_id, "pareto_trials", numbers)


def _wall_split(trials: list[FrozenTrial]) -> dict[str, float]:
    """How much of the trials' wall time the trainer used: the rest is harness overhead."""
    wall = sum(t.user_attrs.get("wall_seconds", 0.0) for t in trials)
    train = sum(t.user_attrs.get("train_seconds", 0.0) for t in trials)
    if wall <= 0:
        return {}
    return {"perf/trial_wall_s": wall, "perf/harness_overhead": 1 - train / wall}
