"""The trials a study worker is running now, so that a signal can fail them at once.

SIGTERM (a cluster preempting the worker) or Ctrl-C must not leave a trial RUNNING until
another worker's heartbeat check, nor its MLflow runs RUNNING: the sweeper's main thread
`abandon`s every trial in flight (FAIL, `fail_reason` naming the signal, MLflow runs
KILLED, queued for a retry with `retry_failed`). A slot thread whose jobs end afterwards
finds its trial gone (`finish` returns False) and tells nothing.
"""

from __future__ import annotations

import logging
import threading

import optuna
from optuna.trial import TrialState

from ppo_exp.study import retry, runs

log = logging.getLogger("ppo_exp")


class TrialsInFlight:
    """Running trials by id, with their study and MLflow run; shared by the slot threads."""

    def __init__(self) -> None:
        self._trials: dict[int, tuple[optuna.Study, optuna.Trial, str]] = {}
        self._lock = threading.Lock()

    def start(self, study: optuna.Study, trial: optuna.Trial, run_id: str) -> None:
        with self._lock:
            self._trials[trial._trial_id] = (study, trial, run_id)

    def finish(self, trial: optuna.Trial) -> bool:
        """Forget `trial`; False if a signal failed it meanwhile (then tell it nothing)."""
        with self._lock:
            return self._trials.pop(trial._trial_id, None) is not None

    def abandon(self, reason: str, *, retry_failed: int) -> None:
        """Fail every trial in flight with `reason`, end its MLflow runs KILLED, and queue
        it for a retry (`retry_failed`), as a dead worker's trial would be."""
        with self._lock:
            abandoned, self._trials = self._trials, {}
        for study, trial, run_id in abandoned.values():
            trial.set_user_attr("fail_reason", reason)
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            runs.close_trial_runs(run_id, "KILLED", reason)
            retry.retry(study, study._storage.get_trial(trial._trial_id), retry_failed)
            log.info("trial %d FAIL %s", trial.number, reason)
