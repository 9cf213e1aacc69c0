"""Signals and kills: a stopped run ends KILLED, a killed one is closed by the next launch;
no password in a URL reaches MLflow or the console."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from ppo_exp import lifecycle

pytestmark = pytest.mark.slow
SECRET_NAME = "https://user:hunter2@models.example.com/m"
LONG_RUN = ["iterations=500", "batch_size=8", "num_minibatches=2", "ppo_epochs=1",
            "max_new_tokens=8", "eval_every=0", "eval_prompts=8", "sample_every=0",
            f"model.name={SECRET_NAME}", "hydra.run.dir=outputs/run"]


def start_and_wait_for_training(tmp_path, mlflow_uri) -> tuple[subprocess.Popen, str]:
    """Launch a long run; return it and its MLflow run id once an iteration is logged."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "ppo_exp.run", *LONG_RUN], cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    mlflow.set_tracking_uri(mlflow_uri)
    client = MlflowClient()
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if (tmp_path / "mlflow.db").exists():
            runs = mlflow.search_runs(experiment_names=["ppo_exp"], output_format="list")
            if runs and client.get_metric_history(runs[0].info.run_id, "rollout/kl"):
                return proc, runs[0].info.run_id
        time.sleep(1)
    proc.kill()
    raise AssertionError(f"the run never reached its first iteration: {proc.communicate()[0]}")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_ends_the_run_killed_with_the_signal_and_no_secret_leaks(
    signum, tmp_path, mlflow_uri, base_model_path
):
    proc, run_id = start_and_wait_for_training(tmp_path, mlflow_uri)
    proc.send_signal(signum)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 128 + signum, output[-2000:]
    run = MlflowClient().get_run(run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["ppo_exp.error"] == f"stopped by {signal.Signals(signum).name}"
    # the password in model.name: masked in params, tags, name, config artifact, console
    config = MlflowClient().download_artifacts(run_id, "config.yaml", str(tmp_path))
    recorded = [json.dumps(run.data.params), json.dumps(run.data.tags), run.info.run_name,
                open(config).read(), output]
    assert all("hunter2" not in text for text in recorded)
    assert "user:***@models.example.com" in run.data.params["model"]


def test_a_sigkilled_run_is_closed_failed_by_the_next_launch(tmp_path, mlflow_uri,
                                                             base_model_path):
    proc, run_id = start_and_wait_for_training(tmp_path, mlflow_uri)
    proc.kill()
    proc.communicate(timeout=60)
    client = MlflowClient()
    assert client.get_run(run_id).info.status == "RUNNING"  # nobody could close it
    experiment_id = client.get_run(run_id).info.experiment_id
    assert lifecycle.close_stale_runs(experiment_id) == []  # its heartbeat is fresh
    later = time.time() + lifecycle.STALE_S + 1  # the next launch, a while later
    assert lifecycle.close_stale_runs(experiment_id, now=later) == [run_id]
    run = client.get_run(run_id)
    assert run.info.status == "FAILED" and "stale" in run.data.tags["ppo_exp.error"]


def test_stopped_crosses_processes_whole():
    """A job in a joblib (loky) process sends its `Stopped` back pickled: it must unpickle
    (`Stopped("SIGTERM")` would not), or the launcher reports a broken pool instead."""
    import pickle

    stop = pickle.loads(pickle.dumps(lifecycle.Stopped(signal.SIGTERM)))
    assert isinstance(stop, lifecycle.Stopped) and stop.signum == signal.SIGTERM
    assert lifecycle.stopped_by(stop) == "SIGTERM"
