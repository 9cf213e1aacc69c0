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


PRUNED_SEED_ATTR = "pruned_seed"  # trial user attr: which seed was pruned, in which trial


class PruningReporter:
    """Tracker that reports the objective to Optuna and raises TrialPruned when told to.

    A trial's seeds may run at once (a parallel launcher): once one seed is pruned, the
    trial is, so the others stop at their next iteration too instead of training on (run
    one after another, a pruned seed already ends the trial before the next starts).

    Args:
        trial: the job's trial, opened with `open_trial`.
        metric: the objective reported at each eval; None reports nothing (Optuna cannot
            prune multi-objective studies).
        seed_index: this job's index in the trial's seeds.
        step_offset: added to each iteration, so that a trial's seeds form one curve.
        siblings: other seeds of the trial may run beside this one (`parallel_seeds`):
            look for a pruned one at every iteration (one storage read each).
    """

    def __init__(
        self, trial: optuna.Trial, metric: str | None, *, seed_index: int, step_offset: int,
        siblings: bool = False,
    ):
        self.trial, self.metric = trial, metric
        self.seed_index, self.step_offset, self.siblings = seed_index, step_offset, siblings

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if self.metric is None or step == 0:
            return
        if self.siblings:
            self._stop_if_a_sibling_was_pruned(step)
        value = metrics.get(self.metric)
        if value is None or not math.isfinite(value):
            return  # not an eval; a NaN objective fails the trial at the end, with its reason
        self.trial.report(value, self.step_offset + step)
        if self.trial.should_prune():
            self.trial.set_user_attr(
                PRUNED_SEED_ATTR, {"trial": self.trial.number, "seed_index": self.seed_index}
            )
            raise optuna.TrialPruned(f"pruned at iteration {step}: {self.metric}={value:.4f}")

    def _stop_if_a_sibling_was_pruned(self, step: int) -> None:
        # A retried trial starts with its failed original's user attrs: only a mark made
        # in this trial counts.
        trial_id = self.trial._trial_id  # noqa: SLF001 (Optuna's own Trial keeps no public id)
        mark = self.trial.storage.get_trial_user_attrs(trial_id).get(PRUNED_SEED_ATTR)
        if mark and mark["trial"] == self.trial.number and mark["seed_index"] != self.seed_index:
            raise optuna.TrialPruned(
                f"pruned at iteration {step}: seed index {mark['seed_index']} of this trial "
                "was pruned first"
            )

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
    sweeper = HydraConfig.get().sweeper
    return PruningReporter(
        trial, single, seed_index=node.seed_index,
        step_offset=node.seed_index * (iterations + 1),
        siblings=bool(sweeper.get("parallel_seeds")) and len(sweeper.get("seeds", [])) > 1,
    )


def result(metrics: dict[str, float], node: TrialConfig, train_seconds: float) -> dict[str, Any]:
    """What a study job returns to its sweeper: its objective value(s) and trainer time."""
    missing = [name for name in node.objectives if name not in metrics]
    if missing:
        raise ConfigError(
            "hydra.sweeper.objectives", missing, "logged metrics: " + ", ".join(sorted(metrics))
        )
    return {"values": [metrics[name] for name in node.objectives], "train_seconds": train_seconds}
