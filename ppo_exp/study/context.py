"""The trial a study is running right now, seen from inside the training job.

Studies launch their jobs in-process (Hydra's basic launcher), so the sweeper sets the
active trial here and the job adds a `PruningReporter` to its trackers: the trainer
then reports the objective to Optuna at every eval, and a pruner can stop it early.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import optuna
import pandas as pd


@dataclass
class ActiveTrial:
    trial: optuna.Trial
    metrics: list[str]  # the objective metric(s), in the study's order
    step_offset: int  # seed index * iterations: steps keep growing across a trial's seeds
    prune: bool  # single-objective studies only: Optuna cannot prune multi-objective ones
    final: dict[str, float] = field(default_factory=dict)  # last value of every metric
    train_seconds: float = 0.0  # time spent inside the trainer (the rest is harness)


_active: ActiveTrial | None = None


def activate(active: ActiveTrial | None) -> None:
    global _active
    _active = active


def active() -> ActiveTrial | None:
    return _active


def reporter() -> PruningReporter | None:
    """A tracker for the running trial, or None outside a study."""
    return PruningReporter(_active) if _active is not None else None


class PruningReporter:
    """Tracker that reports the objective to Optuna and raises TrialPruned when told to."""

    def __init__(self, active: ActiveTrial):
        self.active = active

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.active.final.update(metrics)
        name = self.active.metrics[0]
        if not self.active.prune or name not in metrics or step == 0:
            return
        value = metrics[name]
        if not math.isfinite(value):
            return  # a NaN objective fails the trial at the end, with its reason
        trial = self.active.trial
        trial.report(value, self.active.step_offset + step)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at iteration {step}: {name}={value:.4f}")

    def log_samples(self, samples: pd.DataFrame, step: int) -> None:
        pass
