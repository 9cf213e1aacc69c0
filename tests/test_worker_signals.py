"""A study worker stopped by SIGTERM or SIGINT, or killed by SIGKILL, on each storage:
nothing stays RUNNING in Optuna or MLflow, and a relaunch completes the exact count.

SIGTERM (a cluster preempting the worker) and SIGINT (Ctrl-C) fail the running trial at
once, `fail_reason` naming the signal, its MLflow runs KILLED. A SIGKILLed worker cannot
say anything: its trial stops beating and the relaunch fails it, its runs FAILED, by
heartbeat (Optuna's on SQLite and PostgreSQL, ours on the journal).
"""

from __future__ import annotations

import contextlib
import importlib.util
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


def joblib_available() -> bool:
    return importlib.util.find_spec("hydra_plugins.hydra_joblib_launcher") is not None


def trials_of(name: str, url: str) -> list[FrozenTrial]:
    return optuna.load_study(study_name=name, storage=open_storage(url)).get_trials()


def wait_for_training(wd: Workdir, worker, jobs: int = 1) -> None:
    """Until `jobs` of the worker's jobs have each logged an iteration."""
    deadline = time.monotonic() + 300
    while True:
        assert worker.poll() is None, wd.stderr("worker")
        assert time.monotonic() < deadline, f"fewer than {jobs} jobs started training"
        client = wd.client()
        training = [r for r in wd.runs("run")
                    if client.get_metric_history(r.info.run_id, "rollout/kl")]
        if len(training) >= jobs:
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


@pytest.mark.skipif(not joblib_available(), reason="hydra-joblib-launcher is not installed")
def test_a_stopped_worker_stops_its_job_processes(wd):
    """Under joblib, the jobs run in loky processes the signal does not reach: the worker
    forwards it, gives them a few seconds to end their runs KILLED, and exits."""
    args = ["hydra.sweeper.n_trials=3", *HEARTBEAT, "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2"]
    worker = wd.start(*args, "iterations=60", name="worker")
    try:
        wait_for_training(wd, worker, jobs=2)
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(timeout=60)  # not the rest of the training: job_processes.GRACE_S
    finally:
        if worker.poll() is None:
            worker.kill()
    assert code == 128 + signal.SIGTERM, wd.stderr("worker")
    trials = wd.trials()
    assert states(trials) == ["FAIL", "FAIL"]
    assert {t.user_attrs["fail_reason"] for t in trials} == {"stopped by SIGTERM"}
    assert {r.info.status for r in wd.runs()} == {"KILLED"}  # seed, trial and parent runs
    assert len(wd.runs("run")) == 2

    result = wd.run(*args)  # the relaunch finishes the study
    assert result.returncode == 0, result.stderr[-3000:]
    assert states(wd.trials()) == ["FAIL", "FAIL", "COMPLETE"]  # exactly n_trials
    assert not [r.info.run_name for r in wd.runs() if r.info.status == "RUNNING"]
