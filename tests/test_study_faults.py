"""A journal storage's budget lock is not Optuna's own journal lock."""

from __future__ import annotations

import time

import optuna

from ppo_exp.study.storage import budget_lock, open_storage


def test_the_budget_lock_of_a_journal_is_not_optunas_journal_lock(tmp_path):
    url = f"journal:{tmp_path / 'study.log'}"
    with budget_lock(url, "s"):
        started = time.perf_counter()
        storage = open_storage(url, heartbeat_interval=10, grace_period=60)
        optuna.create_study(study_name="s", storage=storage).ask()  # a journal write
        # sharing `<journal>.lock` made this wait Optuna's 30 s grace and break the lock
        assert time.perf_counter() - started < 10
    assert not (tmp_path / "study.log.lock").exists()  # Optuna's own lock was released
