"""A study worker stopped by SIGTERM or SIGINT, or killed by SIGKILL, on each storage:
nothing stays RUNNING in Optuna or MLflow, and a relaunch completes the exact count.

SIGTERM (a cluster preempting the worker) and SIGINT (Ctrl-C) fail the running trial at
once, `fail_reason` naming the signal, its MLflow runs KILLED. A SIGKILLed worker cannot
say anything: its trial stops beating and the relaunch fails it, its runs FAILED, by
heartbeat (Optuna's on SQLite and PostgreSQL, ours on the journal).
"""

from __future__ import annotations

import contextlib
import signal
import time
import uuid
from urllib.parse import urlsplit

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState
from test_study import (
    HEARTBEAT,
    Workdir,
    children,
    mlflow_template,  # noqa: F401  (session fixture: an empty MLflow store)
    postgres_url,
    states,
    trial_runs_by_number,
    workdir,
)

from ppo_exp.study.storage import open_storage

pytestmark = pytest.mark.slow
SIGNALS = [signal.SIGTERM, signal.SIGINT, signal.SIGKILL]
SECRET = "hunter2"


@pytest.fixture
def wd(tmp_path, request, base_model_path) -> Workdir:
    return workdir(tmp_path, request.getfixturevalue("mlflow_template"))


@contextlib.contextmanager
def study_storage(wd: Workdir, backend: str):
    """(study name, storage URL) on `backend`; a PostgreSQL study is deleted afterwards."""
    if backend == "postgresql":  # with a password, which no console line may show
        url, name = with_password(postgres_url()), f"test_signals_{uuid.uuid4().hex[:10]}"
    else:
        url, name = wd.optuna_url, "core"
        if backend == "journal":
            url = f"journal:{wd.path / 'optuna.log'}"
    try:
        yield name, url
    finally:
        if backend == "postgresql":
            with contextlib.suppress(KeyError):
                optuna.delete_study(study_name=name, storage=url)


def with_password(url: str) -> str:
    """`url` with a password (a trust-auth test server ignores it)."""
    parts = urlsplit(url)
    if parts.password or not parts.username:
        return url
    return parts._replace(netloc=parts.netloc.replace("@", f":{SECRET}@", 1)).geturl()


def trials_of(name: str, url: str) -> list[FrozenTrial]:
    return optuna.load_study(study_name=name, storage=open_storage(url)).get_trials()


def wait_for_training(wd: Workdir, worker) -> None:
    """Until the worker's first job has logged an iteration."""
    deadline = time.monotonic() + 300
    while True:
        assert worker.poll() is None, wd.stderr("worker")
        assert time.monotonic() < deadline, "no trial started training"
        seed_runs = wd.runs("run")
        if seed_runs and wd.client().get_metric_history(seed_runs[0].info.run_id, "rollout/kl"):
            return
        time.sleep(0.5)


@pytest.mark.parametrize("signum", SIGNALS, ids=[s.name for s in SIGNALS])
@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "journal"])
def test_a_stopped_or_killed_worker_leaves_nothing_running(wd, backend, signum):
    with study_storage(wd, backend) as (name, url):
        args = ["hydra.sweeper.n_trials=2", f"hydra.sweeper.storage={url}",
                f"hydra.sweeper.study_name={name}", *HEARTBEAT]
        worker = wd.start(*args, "iterations=30", name="worker")
        try:
            wait_for_training(wd, worker)
            worker.send_signal(signum)
            code = worker.wait(timeout=120)
        finally:
            if worker.poll() is None:
                worker.kill()
        (trial,) = trials_of(name, url)
        (seed_run,) = wd.runs("run")
        (parent,) = wd.runs("study")
        if signum == signal.SIGKILL:
            assert code == -signal.SIGKILL
            assert trial.state == TrialState.RUNNING  # nobody could tell yet
        else:  # told at once, before the worker exited
            assert code == 128 + signum, wd.stderr("worker")
            assert trial.state == TrialState.FAIL
            assert trial.user_attrs["fail_reason"] == f"stopped by {signum.name}"
            assert seed_run.info.status == "KILLED"
            assert trial_runs_by_number(wd)[0].info.status == "KILLED"
            assert parent.info.status == "KILLED"

        result = wd.run(*args)  # the relaunch finishes the study
        assert result.returncode == 0, result.stderr[-3000:]
        trials = trials_of(name, url)
        assert states(trials) == ["FAIL", "COMPLETE"]  # exactly n_trials
        dead = trial_runs_by_number(wd)[0]
        assert dead.info.run_id == trial.user_attrs["mlflow_run_id"]
        (dead_seed_run,) = children(wd.runs(), dead)
        assert dead_seed_run.info.run_id == seed_run.info.run_id
        if signum == signal.SIGKILL:
            assert "heartbeat" in dead.data.tags["ppo_exp.error"]
            assert {dead.info.status, dead_seed_run.info.status} == {"FAILED"}
        else:
            assert {dead.info.status, dead_seed_run.info.status} == {"KILLED"}
        assert dead.data.tags["ppo_exp.trial_state"] == "FAIL"
        assert trial_runs_by_number(wd)[1].info.status == "FINISHED"
        assert not [r.info.run_name for r in wd.runs() if r.info.status == "RUNNING"]
        (parent,) = wd.runs("study")
        assert parent.info.status == "FINISHED"
        if backend == "postgresql":  # Hydra's "#0 : ... optuna.storage=..." lines too
            console = (wd.path / "worker.out").read_text() + wd.stderr("worker", tail=10**6)
            console += result.stdout + result.stderr
            assert SECRET not in console
            assert f"{urlsplit(url).username}:***@" in console
