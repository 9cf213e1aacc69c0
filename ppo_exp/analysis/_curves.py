"""Learning curves: the metric histories of chosen runs, as a long table."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pandas as pd
from mlflow.tracking import MlflowClient

CURVE_METRICS = (
    "rollout/reward_mean",
    "rollout/kl",
    "rollout/entropy",
    "policy/clipfrac",
    "value/explained_var",
)
# Stores written before the rollout statistics were renamed logged them as `objective/...`.
OLD_NAMES = {"rollout/": "objective/"}


def _history(client: MlflowClient, run_id: str, metric: str) -> list:
    """A metric's history, read under its old name in stores that predate the rename."""
    points = client.get_metric_history(run_id, metric)
    for new, old in OLD_NAMES.items():
        if not points and metric.startswith(new):
            points = client.get_metric_history(run_id, old + metric.removeprefix(new))
    return sorted(points, key=lambda m: m.step)


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
        for point in _history(client, run_id, metric)
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
