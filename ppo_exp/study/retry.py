"""Retrying trials whose worker died: `hydra.sweeper.retry_failed: N`.

A trial whose worker was killed (SIGKILL, a lost machine) stops sending heartbeats; the
next worker to look fails it (`storage.fail_stale_trials`). A worker stopped by SIGTERM
(a preempted SLURM job) or SIGINT fails its running trials itself before it exits. Either
way, with `retry_failed > 0`, the failed trial is queued again with Optuna's
`RetryHeartbeatStaleTrialCallback`: the same params, user attrs and intermediate values,
and the system attrs `failed_trial` (the original trial's number) and `retry_history`;
at most N retries per original trial. The copy runs before any new trial, and each of
its seeds resumes from the checkpoint its previous attempt left in its job dir (the
job records that dir on the trial: `job.JOB_DIR_ATTR`), instead of starting over.

A failed trial that a retry replaced does not count towards `n_trials`: the study still
ends with `n_trials` trials that ran to their end.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial

from ppo_exp.study import runs
from ppo_exp.study.job import JOB_DIR_ATTR

log = logging.getLogger("ppo_exp")


def retry(study: optuna.Study, trial: FrozenTrial, max_retry: int) -> None:
    """Queue a copy of the failed `trial`, unless its original was retried `max_retry` times.

    A trial whose values no longer fit the search space (a relaunch narrowed a range
    around an enqueued baseline) is not retried: a log line says so, the study goes on.
    """
    if max_retry <= 0:
        return
    try:
        RetryHeartbeatStaleTrialCallback(max_retry, inherit_intermediate_values=True)(study, trial)
    except ValueError as error:
        log.warning("trial %d not retried: %s", trial.number, error)


def on_dead_worker(max_retry: int) -> Callable[[optuna.Study, FrozenTrial], None]:
    """The storage's stale-trial callback: queue a retry, and fail the trial's MLflow runs."""

    def callback(study: optuna.Study, trial: FrozenTrial) -> None:
        retry(study, trial, max_retry)
        runs.fail_dead_trial_runs(study, trial)

    return callback


def retried_from(trial: FrozenTrial) -> int | None:
    """The number of the original trial `trial` retries, or None."""
    return RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)


def counted(trials: Sequence[FrozenTrial]) -> int:
    """How many of `trials` count towards `n_trials`: all but those a retry replaced."""
    history = RetryHeartbeatStaleTrialCallback.retry_history
    replaced = {number for t in trials for number in history(t)}
    return sum(t.number not in replaced for t in trials)


def resume_overrides(trial: FrozenTrial, seed_index: int) -> list[str]:
    """`resume=<dir>` for a retried seed whose previous attempt left a checkpoint, else []."""
    from ppo_exp.ppo import checkpoint

    previous = trial.user_attrs.get(JOB_DIR_ATTR.format(seed_index))
    if retried_from(trial) is None or previous is None or checkpoint.latest(Path(previous)) is None:
        return []
    return ["resume='" + previous.replace("'", "\\'") + "'"]
