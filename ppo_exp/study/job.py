"""The study side of a training job: report the objective to Optuna, and stop when pruned.

The study sweeper launches each seed of a trial as an ordinary Hydra job whose `optuna`
config node (`ppo_exp.config.TrialConfig`) names the storage, the study and the trial.
The job opens the storage itself, reports its objective there at every held-out eval and
asks it whether to prune: Optuna's own pattern for trials that run in other processes
or on other machines (`optuna.trial.Trial(study, trial_id)` in the job, `study.tell` in
the sweeper). No module global and no environment variable carries the trial, so a job
launched in-process, in a joblib worker, a submitit/SLURM job or a Ray worker behaves
the same.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from hydra.core.hydra_config import HydraConfig

from ppo_exp.config import ConfigError, TrialConfig
from ppo_exp.study.algorithms import PRUNERS, build
from ppo_exp.study.storage import open_storage


def open_trial(node: TrialConfig, pruner: optuna.pruners.BasePruner) -> optuna.Trial:
    """The running trial `node` names, in its own storage, judged by `pruner`."""
    study = optuna.load_study(
        study_name=node.study,
        storage=open_storage(node.storage),
        # The sweeper samples; a job never asks for values, so no sampler work here.
        sampler=optuna.samplers.RandomSampler(),
        pruner=pruner,
    )
    return optuna.trial.Trial(study, node.trial_id)


def study_pruner() -> optuna.pruners.BasePruner:
    """The pruner of the study this job belongs to, as its launch configured it.

    A job's Hydra config is composed from the same command as the sweeper's (`study=NAME`
    and its `hydra.sweeper.*` overrides), so every job judges with the sweeper's pruner.
    """
    return build(PRUNERS, HydraConfig.get().sweeper.pruner, "pruner")


class PruningReporter:
    """Tracker that reports the objective to Optuna and raises TrialPruned when told to.

    Args:
        trial: the job's trial, opened with `open_trial`.
        metric: the objective reported at each eval; None reports nothing (Optuna cannot
            prune multi-objective studies).
        step_offset: added to each iteration, so that a trial's seeds form one curve.
    """

    def __init__(self, trial: optuna.Trial, metric: str | None, *, step_offset: int):
        self.trial, self.metric, self.step_offset = trial, metric, step_offset

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if self.metric is None or self.metric not in metrics or step == 0:
            return
        value = metrics[self.metric]
        if not math.isfinite(value):
            return  # a NaN objective fails the trial at the end, with its reason
        self.trial.report(value, self.step_offset + step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at iteration {step}: {self.metric}={value:.4f}")

    def log_samples(self, samples: pd.DataFrame, step: int) -> None:
        pass


JOB_DIR_ATTR = "job_dir.seed_{}"  # trial user attr: the folder of a seed's job (checkpoints)


def reporter(node: TrialConfig, iterations: int, *, job_dir: Path | None) -> PruningReporter:
    """The pruning tracker of a study job (`node.study` set) training `iterations` steps.

    The job's folder is recorded on the trial: a retry of this trial (it copies the user
    attrs) resumes from the checkpoints there (`StudySweeper._resume_overrides`).
    """
    single = node.objectives[0] if len(node.objectives) == 1 else None
    trial = open_trial(node, study_pruner())
    if job_dir is not None:
        trial.set_user_attr(JOB_DIR_ATTR.format(node.seed_index), str(job_dir.resolve()))
    return PruningReporter(trial, single, step_offset=node.seed_index * (iterations + 1))


def result(metrics: dict[str, float], node: TrialConfig, train_seconds: float) -> dict[str, Any]:
    """What a study job returns to its sweeper: its objective value(s) and trainer time."""
    missing = [name for name in node.objectives if name not in metrics]
    if missing:
        raise ConfigError(
            "hydra.sweeper.objectives", missing, "logged metrics: " + ", ".join(sorted(metrics))
        )
    return {"values": [metrics[name] for name in node.objectives], "train_seconds": train_seconds}
