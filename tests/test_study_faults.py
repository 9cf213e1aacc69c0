"""Journal storage: its budget lock is not Optuna's own lock, and its trials beat."""

from __future__ import annotations

import time

import optuna
from optuna.trial import TrialState

from ppo_exp.study.storage import Heartbeat, budget_lock, fail_stale_trials, open_storage


def test_the_budget_lock_of_a_journal_is_not_optunas_journal_lock(tmp_path):
    url = f"journal:{tmp_path / 'study.log'}"
    with budget_lock(url, "s"):
        started = time.perf_counter()
        storage = open_storage(url, heartbeat_interval=10, grace_period=60)
        optuna.create_study(study_name="s", storage=storage).ask()  # a journal write
        # sharing `<journal>.lock` made this wait Optuna's 30 s grace and break the lock
        assert time.perf_counter() - started < 10
    assert not (tmp_path / "study.log.lock").exists()  # Optuna's own lock was released



def test_a_journal_trial_that_stops_beating_is_failed_by_another_worker(tmp_path):
    url, failed = f"journal:{tmp_path / 'study.log'}", []
    storage = open_storage(url, heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(study_name="s", storage=storage)
    dead, never_beat = study.ask(), study.ask()
    with Heartbeat(storage, dead._trial_id, interval=1):  # one beat, then its worker dies
        pass
    fail_stale_trials(study, storage)
    assert [t.state for t in study.trials] == [TrialState.RUNNING] * 2  # the beat is fresh
    time.sleep(1.5)
    survivor = open_storage(url, heartbeat_interval=1, grace_period=1,
                            stale_trial_callback=lambda s, trial: failed.append(trial.number))
    fail_stale_trials(optuna.load_study(study_name="s", storage=survivor), survivor)
    # as with RDB heartbeats, a trial that never beat is not judged
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.RUNNING]
    assert failed == [dead.number] and never_beat.number == 1
