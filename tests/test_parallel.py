"""Studies and sweeps through parallel Hydra launchers: joblib, submitit (SLURM's code
path, run locally), several commands on one PostgreSQL study with an MLflow server.

Jobs run in other processes here, so everything a job needs (its trial, the storage, its
MLflow parent run) must travel in its own config: these tests fail if it does not.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import optuna
import pytest
from conftest import TINY_RUN
from optuna.trial import TrialState
from test_study import (
    HEARTBEAT,
    PARAMS,
    TINY,
    Workdir,
    by_number,
    children,
    mlflow_template,  # noqa: F401  (session fixture: an empty MLflow store)
    postgres_url,
    states,
    trial_runs_by_number,
    why_not_complete,
    workdir,
    write_study,
)

from ppo_exp.resources import cores

pytestmark = pytest.mark.slow

JOBLIB = ["hydra/launcher=joblib", "hydra.sweeper.n_jobs=2"]
LAUNCHERS = {
    "basic": ["threads=1"],  # in-process, one trial at a time
    "joblib": JOBLIB,
    "submitit_local": ["hydra/launcher=submitit_local", "hydra.sweeper.n_jobs=2"],
    "ray": ["hydra/launcher=ray", "hydra.sweeper.n_jobs=2"],
}
RAY_MISSING = importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is None
NEEDS_RAY = pytest.mark.skipif(
    RAY_MISSING,
    reason="hydra-ray-launcher is not installed: it pins cloudpickle<3, which joblib>=1.6 "
    "refuses, so it lives in its own venv (README: Parallel trials, Ray)",
)


@pytest.fixture
def wd(tmp_path, request, base_model_path) -> Workdir:
    """A working directory with its own Optuna and MLflow stores (as in test_study.py)."""
    return workdir(tmp_path, request.getfixturevalue("mlflow_template"))


def assert_no_run_left_running(wd: Workdir) -> None:
    running = [r.info.run_name for r in wd.runs() if r.info.status == "RUNNING"]
    assert not running, running


@pytest.mark.parametrize(
    "launcher", [pytest.param(n, marks=NEEDS_RAY if n == "ray" else ()) for n in LAUNCHERS]
)
def test_a_study_runs_the_same_on_every_launcher(wd, launcher):
    del wd.env["OMP_NUM_THREADS"]  # jobs pick their threads themselves
    result = wd.run("hydra.sweeper.n_trials=4", *LAUNCHERS[launcher])
    assert result.returncode == 0, result.stderr[-3000:]
    trials = wd.trials()
    assert states(trials) == ["COMPLETE"] * 4, why_not_complete(trials)  # none FAILed
    all_runs = wd.runs()
    (parent,) = wd.runs("study")
    assert parent.info.status == "FINISHED"
    for param in PARAMS:
        assert f"importance.{param}" in parent.data.metrics, param
    trial_runs = trial_runs_by_number(wd)
    assert sorted(trial_runs) == [0, 1, 2, 3]
    assert {r.info.run_id for r in children(all_runs, parent)} == {
        r.info.run_id for r in trial_runs.values()
    }
    # One job thread each when two share this machine's cores; as set when given.
    threads = "1" if launcher == "basic" else str(max(1, cores() // 2))
    for number, run in trial_runs.items():
        trial = by_number(trials)[number]
        (seed_run,) = children(all_runs, run)
        assert seed_run.info.status == "FINISHED"
        for key, value in trial.params.items():  # the trial's values reached the job
            assert float(seed_run.data.params[key]) == value, key
        logged = seed_run.data.metrics["eval/score_auc"]  # what the job itself logged
        assert trial.value == pytest.approx(logged, rel=1e-12)
        assert run.data.metrics["eval/score_auc"] == pytest.approx(logged, rel=1e-12)
        assert trial.intermediate_values  # reported by the job, from its own process
        assert seed_run.data.tags["ppo_exp.threads"] == threads  # read back from torch
    assert wd.job_dirs() == [0, 1, 2, 3]
    assert_no_run_left_running(wd)


@pytest.mark.parametrize(
    ("backend", "parallel_seeds"), [("sqlite", False), ("sqlite", True), ("postgresql", True)]
)
def test_parallel_trials_are_pruned_by_their_jobs(wd, backend, parallel_seeds):
    write_study(wd, "pruned", pruner={"name": "threshold", "lower": 1e9})  # prunes any report
    args = [*JOBLIB, "iterations=3", "eval_every=1", "hydra.sweeper.n_trials=2",
            f"hydra.sweeper.parallel_seeds={str(parallel_seeds).lower()}"]
    name, storage = "pruned", wd.optuna_url
    if backend == "postgresql":
        storage, name = postgres_url(), f"test_pruned_{uuid.uuid4().hex[:10]}"
        args += [f"hydra.sweeper.storage={storage}", f"hydra.sweeper.study_name={name}"]
    try:
        result = wd.run(*args, "hydra.sweeper.seeds=[0,1]", study="pruned")
        assert result.returncode == 0, result.stderr[-3000:]
        trials = wd.trials(name, storage)
        assert states(trials) == ["PRUNED", "PRUNED"]
        for trial in trials:
            if parallel_seeds:  # both seeds ran at once; seed 1 reports after seed 0's steps
                assert set(trial.intermediate_values) <= {1, 2, 3, 5, 6, 7}
                assert trial.intermediate_values
            else:  # seed 0 was pruned at its first report: seed 1 never started
                assert set(trial.intermediate_values) == {1}
        all_runs = wd.runs()
        for run in trial_runs_by_number(wd).values():
            assert run.info.status == "KILLED"
            assert "pruned at iteration 1" in run.data.tags["ppo_exp.pruned"]
            seed_runs = children(all_runs, run)
            assert {r.info.status for r in seed_runs} == {"KILLED"}
            assert len(seed_runs) == (2 if parallel_seeds else 1)
    finally:
        if backend == "postgresql":
            with contextlib.suppress(KeyError):
                optuna.delete_study(study_name=name, storage=storage)


def loky_workers(pid: int) -> list[int]:
    """The joblib (loky) worker processes under process `pid`, busiest first."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
            stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            if b"loky" in cmdline and int(stat[1]) == pid:  # stat[1]: parent pid
                found.append((int(stat[11]), int(proc.name)))  # stat[11]: user time
    return [p for _, p in sorted(found, reverse=True)]


def test_a_killed_job_is_failed_by_heartbeat_and_the_count_stays_exact(wd):
    args = [*JOBLIB, "hydra.sweeper.n_trials=3", "iterations=30", *HEARTBEAT]
    driver = wd.start(*args, name="driver")
    try:
        deadline = time.monotonic() + 300
        while not wd.runs("run") or not loky_workers(driver.pid):  # training has begun
            assert driver.poll() is None, wd.stderr("driver")
            assert time.monotonic() < deadline, "no job started"
            time.sleep(0.5)
        os.kill(loky_workers(driver.pid)[0], signal.SIGKILL)
        assert driver.wait(timeout=600) == 0, wd.stderr("driver")
    finally:
        if driver.poll() is None:
            driver.kill()
    trials = wd.trials()
    assert len(trials) == 3  # the lost trials count: n_trials is exact
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert failed, states(trials)
    assert {t.state for t in trials} <= {TrialState.FAIL, TrialState.COMPLETE}
    assert trials[-1].state == TrialState.COMPLETE  # the study went on after the kill
    trial_runs = trial_runs_by_number(wd)
    for trial in failed:
        run = trial_runs[trial.number]
        assert run.info.status == "FAILED"
        assert "heartbeat" in run.data.tags["ppo_exp.error"]
    assert_no_run_left_running(wd)
    (parent,) = wd.runs("study")
    assert parent.info.status == "FINISHED"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(folder: Path):
    """`mlflow server` on 127.0.0.1 (SQLite backend, local artifact root); yields its URI."""
    port = free_port()
    log = open(folder / "mlflow_server.log", "w")
    server = subprocess.Popen(
        [
            sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1",
            "--port", str(port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
            "--artifacts-destination", str(folder / "artifacts"),
        ],
        cwd=folder, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (folder / "mlflow_server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "mlflow server did not start"
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            time.sleep(0.5)
        yield uri
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def test_two_commands_share_a_postgres_study_and_an_mlflow_server(wd):
    storage, name = postgres_url(), f"test_shared_{uuid.uuid4().hex[:10]}"
    args = [
        *JOBLIB,
        "hydra.sweeper.n_trials=4",
        f"hydra.sweeper.storage={storage}",
        f"hydra.sweeper.study_name={name}",
        *HEARTBEAT,
    ]
    with mlflow_server(wd.path) as uri:
        wd.env["MLFLOW_TRACKING_URI"] = uri
        commands = [wd.start(*args, name=f"command{i}") for i in range(2)]
        try:
            for i, command in enumerate(commands):
                assert command.wait(timeout=600) == 0, wd.stderr(f"command{i}")
            trials = wd.trials(name, storage)
            assert sorted(t.number for t in trials) == [0, 1, 2, 3]  # exact, no duplicates
            assert states(trials) == ["COMPLETE"] * 4, why_not_complete(trials)
            (parent,) = wd.runs("study")
            assert parent.info.status == "FINISHED"
            trial_runs = trial_runs_by_number(wd)
            assert sorted(trial_runs) == [0, 1, 2, 3]
            all_runs = wd.runs()
            assert len(children(all_runs, parent)) == 4
            for run in trial_runs.values():
                (seed_run,) = children(all_runs, run)
                assert seed_run.info.status == "FINISHED"
        finally:
            for command in commands:
                if command.poll() is None:
                    command.kill()
            with contextlib.suppress(KeyError):
                optuna.delete_study(study_name=name, storage=storage)


def test_a_failing_job_of_a_parallel_sweep_fails_the_parent_and_keeps_the_rest(wd):
    (wd.path / "rewards_ok.py").write_text("def score(texts):\n    return [0.5] * len(texts)\n")
    (wd.path / "rewards_down.py").write_text(
        "def score(texts):\n    raise RuntimeError('reward server is down')\n"
    )
    result = wd._run(
        [
            sys.executable, "-m", "ppo_exp.run", "-m", *TINY_RUN, "reward=function",
            "reward.function=rewards_down:score,rewards_ok:score", "hydra/launcher=joblib",
        ]
    )  # fmt: skip
    assert result.returncode != 0
    (parent,) = wd.runs("sweep")
    assert parent.info.status == "FAILED"
    assert "job 0" in parent.data.tags["ppo_exp.error"]
    assert "reward server is down" in parent.data.tags["ppo_exp.error"]
    jobs = {r.data.params["reward"]: r for r in wd.runs("run")}
    assert jobs["rewards_down:score"].info.status == "FAILED"
    kept = jobs["rewards_ok:score"]
    assert kept.info.status == "FINISHED"
    assert "eval/reward_mean" in kept.data.metrics
    assert_no_run_left_running(wd)


@pytest.mark.parametrize(
    "launcher,seeds,beside",
    [
        ("joblib", "0", 1),
        ("joblib", "0,1", 2),
        ("submitit_local", "0", 1),
        pytest.param("ray", "0", 1, marks=NEEDS_RAY),
    ],
    ids=["joblib-alone", "joblib-two", "submitit_local-alone", "ray-alone"],
)
def test_a_plain_sweep_job_shares_the_cores_with_the_jobs_beside_it(wd, launcher, seeds, beside):
    del wd.env["OMP_NUM_THREADS"]  # jobs pick their threads themselves
    result = wd._run(
        [sys.executable, "-m", "ppo_exp.run", "-m", *TINY_RUN, f"seed={seeds}",
         f"hydra/launcher={launcher}"]
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = wd.runs("run")
    assert len(jobs) == beside
    # read back from torch in each job: the cores over the jobs of its batch, not over
    # joblib's workers (or, under submitit_local, over one job per core)
    assert {r.data.tags["ppo_exp.threads"] for r in jobs} == {str(max(1, cores() // beside))}


def test_the_shells_omp_num_threads_pins_every_job(wd):
    wd.env["OMP_NUM_THREADS"] = "1"  # joblib would hand a lone job's worker its own value
    result = wd._run(
        [sys.executable, "-m", "ppo_exp.run", "-m", *TINY_RUN, "seed=0", "hydra/launcher=joblib",
         "hydra.launcher.n_jobs=1"]
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (job,) = wd.runs("run")
    assert job.data.tags["ppo_exp.threads"] == "1"


def test_throughput_benchmark_runs_both_settings(tmp_path, base_model_path):
    result = subprocess.run(
        [sys.executable, "-m", "ppo_exp.bench.study", "throughput", "--workdir", str(tmp_path),
         "--trials", "1", *TINY],
        capture_output=True, text=True, timeout=600, env={**os.environ, "TQDM_DISABLE": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert len([line for line in lines if "trials/hour" in line]) == 2, result.stdout
    assert any(line.startswith("throughput ratio") for line in lines), result.stdout
    assert len([line for line in lines if "best value" in line]) == 2, result.stdout
