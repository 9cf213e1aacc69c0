"""One trial of a study: its seed jobs, how they are launched, and what Optuna and MLflow
are told once they end (the sweeper, sweeper.py, asks for trials and runs them in slots).

Each job is an ordinary run with the trial's values as overrides, plus an `optuna` config
node (config.TrialConfig) that tells it its trial; the trial's value is the mean over seeds.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import optuna
from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra.core.utils import JobStatus
from optuna.trial import TrialState

from ppo_exp.study import runs
from ppo_exp.study.settings import StudySweeperConf
from ppo_exp.study.space import as_override
from ppo_exp.study.storage import absolute_url

log = logging.getLogger("ppo_exp")


@dataclass
class Outcome:
    """One seed job's end: COMPLETE with its objective values, PRUNED, or FAIL (reason)."""

    state: TrialState
    values: list[float] = field(default_factory=list)
    reason: str | None = None
    train_seconds: float = 0.0  # spent inside the trainer (the rest is harness)


def seed_jobs(
    arguments: list[str],
    trial: optuna.Trial,
    run_id: str,
    settings: StudySweeperConf,
    *,
    extra: list[list[str]],
) -> list[list[str]]:
    """The overrides of the trial's jobs, one per seed: the command line's, the trial's
    values, the seed, the first objective, the `optuna` node and `extra[k]` (a retried
    trial's `resume=`)."""
    metrics = list(settings.objectives)
    return [
        [
            *arguments,
            *(as_override(k, v) for k, v in trial.params.items()),
            f"seed={seed}",
            f"objective={metrics[0]}",
            *trial_node(trial, run_id, settings, seed_index=k),
            *extra[k],
        ]
        for k, seed in enumerate(settings.seeds)
    ]


def trial_node(
    trial: optuna.Trial, run_id: str, settings: StudySweeperConf, *, seed_index: int
) -> list[str]:
    """The `optuna` config node that tells a job its trial (ppo_exp.config.TrialConfig)."""
    objectives = ",".join(_quoted(m) for m in settings.objectives)
    return [
        f"optuna.study={_quoted(settings.study_name)}",
        f"optuna.storage={_quoted(absolute_url(settings.storage))}",
        f"optuna.trial={trial.number}",
        f"optuna.trial_id={trial._trial_id}",
        f"optuna.seed_index={seed_index}",
        f"optuna.objectives=[{objectives}]",
        f"optuna.parent_run_id={run_id}",
    ]


def launch(launcher: Any, jobs: list[list[str]], seeds: list[int], *, first_job: int,
           parallel_seeds: bool = False) -> list[Outcome]:
    """Run a trial's seed jobs: one at a time, where a pruned or failed seed ends the
    trial; or in one batch when `parallel_seeds` and the launcher runs jobs in parallel.

    Job numbers are trial * seeds + seed index, so job directories never collide.
    """
    if parallel_seeds and not isinstance(launcher, BasicLauncher):
        returns = launcher.launch(jobs, initial_job_idx=first_job)
        return [_outcome(job, seed) for job, seed in zip(returns, seeds, strict=True)]
    outcomes = []
    for k, (overrides, seed) in enumerate(zip(jobs, seeds, strict=True)):
        (job,) = launcher.launch([overrides], initial_job_idx=first_job + k)
        outcomes.append(_outcome(job, seed))
        if outcomes[-1].state != TrialState.COMPLETE:
            break
    return outcomes


def tell(
    study: optuna.Study,
    trial: optuna.Trial,
    outcomes: list[Outcome],
    run_id: str,
    settings: StudySweeperConf,
    *,
    started: float,
) -> None:
    """Tell Optuna the mean over seeds (or the first seed's PRUNED / FAIL), with the seeds'
    values and times as user attributes; end the trial's MLflow run."""
    metrics = list(settings.objectives)
    per_seed = [o.values for o in outcomes if o.state == TrialState.COMPLETE]
    state, reason = TrialState.COMPLETE, None
    for outcome in outcomes:  # the first seed that did not complete decides
        if outcome.state != TrialState.COMPLETE:
            state, reason = outcome.state, outcome.reason
            break
    values = [sum(col) / len(col) for col in zip(*per_seed, strict=True)] if per_seed else []
    trial.set_user_attr("seeds", list(settings.seeds[: len(per_seed)]))
    trial.set_user_attr("seed_values", per_seed)
    trial.set_user_attr("train_seconds", sum(o.train_seconds for o in outcomes))
    trial.set_user_attr("wall_seconds", time.perf_counter() - started)
    if reason:
        trial.set_user_attr("fail_reason", reason)
    if state == TrialState.COMPLETE:
        study.tell(trial, values if len(values) > 1 else values[0])
    else:
        study.tell(trial, state=state)
    log.info("trial %d %s %s", trial.number, state.name, reason or values)
    runs.end_trial_run(run_id, state, metrics, values, per_seed, settings.seeds, reason)


def _outcome(job: Any, seed: int) -> Outcome:
    # What the job raised. Not `job.return_value`: it would print Hydra's "Error executing
    # job" line, which reads like a failure for a pruned trial (logged as one info line).
    error = job._return_value if job.status != JobStatus.COMPLETED else None
    if isinstance(error, optuna.TrialPruned):
        return Outcome(TrialState.PRUNED, reason=str(error))
    if error is not None:  # the trainer raised: this trial fails, the study goes on
        return Outcome(TrialState.FAIL, reason=f"seed {seed}: {type(error).__name__}: {error}")
    values, seconds = job._return_value["values"], job._return_value["train_seconds"]
    for name, value in zip(job.cfg.optuna.objectives, values, strict=True):
        if not math.isfinite(value):
            return Outcome(
                TrialState.FAIL,
                reason=f"seed {seed}: objective {name}={value} is not finite",
                train_seconds=seconds,
            )
    return Outcome(TrialState.COMPLETE, values=values, train_seconds=seconds)


def _quoted(text: str) -> str:
    """`text` as a quoted Hydra override value (URLs and metric names hold : / @)."""
    return "'" + text.replace("'", "\\'") + "'"
