"""Resuming through the real command: a crashed run goes on in its own MLflow run, and a
killed study trial is retried from its checkpoint."""

from __future__ import annotations

import os
import signal
import time

import pytest
from conftest import run_cli
from mlflow.tracking import MlflowClient
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState
from test_study import (
    HEARTBEAT,
    mlflow_template,  # noqa: F401  (session fixture: an empty MLflow store)
    states,
    trial_runs_by_number,
    wd,  # noqa: F401  (fixture: a working directory with its own stores)
)

from ppo_exp.ppo import checkpoint

pytestmark = pytest.mark.slow

# Scores by length, and fails on its 5th call in a process: with evals only at step 0 and
# the end, that is iteration 4's rollout (iterations 1-3 logged, checkpoint at 2).
CRASHES_ON_FIFTH_CALL = """calls = 0


def score(texts):
    global calls
    calls += 1
    if calls == 5:
        raise RuntimeError("reward server went down")
    return [len(t) / 10 for t in texts]
"""
RUN = [
    "train=smoke", "iterations=4", "checkpoint_every=2", "reward=function",
    "reward.function=crashing_reward:score", "hydra.run.dir=outputs/run",
]


def test_a_crashed_run_resumes_in_its_own_mlflow_run_without_duplicate_steps(
    tmp_path, mlflow_uri, base_model_path
):
    (tmp_path / "crashing_reward.py").write_text(CRASHES_ON_FIFTH_CALL)
    crashed = run_cli(*RUN, cwd=tmp_path)
    assert crashed.returncode == 1, crashed.stderr[-3000:]
    job_dir = tmp_path / "outputs" / "run"
    assert checkpoint.latest(job_dir).name == "iteration_0002"

    resumed = run_cli(*RUN, "resume=auto", "iterations=5", cwd=tmp_path)  # and a longer budget
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    client = MlflowClient(mlflow_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("ppo_exp").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.tags["ppo_exp.resumed_from"].endswith("iteration_0002 (iteration 2)")
    for name in ("rollout/reward_mean", "rollout/kl", "policy/clipfrac"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, name)]
        assert sorted(steps) == [1, 2, 3, 4, 5], name  # step 3 logged once, before the crash
    assert [m.step for m in client.get_metric_history(run.info.run_id, "eval/kl")] == [0, 5]
    assert run.data.params["iterations"] == "4"  # as it started; the new budget is a tag
    assert run.data.tags["ppo_exp.resume.iterations"] == "5"
    # the final policy: weights and tokenizer, a few MB for the toy model
    policy = {a.path: a.file_size for a in client.list_artifacts(run.info.run_id, "policy")}
    expected = {"policy/model.safetensors", "policy/config.json", "policy/tokenizer.json"}
    assert expected <= set(policy)
    assert 1e6 < sum(policy.values()) < 20e6
    assert checkpoint.latest(job_dir).name == "iteration_0005"


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_killed_trial_is_retried_and_resumes_from_its_checkpoint(wd, signum):  # noqa: F811
    args = [
        "hydra.sweeper.n_trials=2", "hydra.sweeper.retry_failed=1", "iterations=6",
        "checkpoint_every=2", "hydra.sweeper.enqueue=[]", *HEARTBEAT,
    ]
    first_job = wd.sweep_dir() / "0"
    driver = wd.start(*args, name="killed")
    try:
        deadline = time.monotonic() + 300
        while checkpoint.latest(first_job) is None:  # trial 0 has saved a checkpoint
            assert driver.poll() is None, wd.stderr("killed")
            assert time.monotonic() < deadline, "no checkpoint written"
            time.sleep(0.2)
        # SIGKILL: the worker and its in-process job die at once, its trial left to the
        # heartbeat; SIGTERM (a preemption): the worker fails its trial, runs KILLED.
        os.kill(driver.pid, signum)
        driver.wait(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
    saved = checkpoint.read_info(checkpoint.latest(first_job))["iteration"]

    relaunch = wd.run(*args)
    assert relaunch.returncode == 0, relaunch.stderr[-3000:]
    trials = sorted(wd.trials(), key=lambda t: t.number)
    assert states(trials) == ["FAIL", "COMPLETE", "COMPLETE"]  # n_trials=2 ran to the end
    retried = trials[1]
    assert RetryHeartbeatStaleTrialCallback.retried_trial_number(retried) == 0
    assert retried.params == trials[0].params
    trial_runs = trial_runs_by_number(wd)
    assert trial_runs[1].data.tags["ppo_exp.retried_from"] == "0"
    assert trial_runs[0].info.status == ("FAILED" if signum == signal.SIGKILL else "KILLED")
    # trial 1's job went on from trial 0's checkpoint, in the same MLflow run
    (seed_run,) = [
        r for r in wd.runs("run")
        if r.data.tags["mlflow.parentRunId"] == trial_runs[1].info.run_id
    ]
    assert seed_run.info.status == "FINISHED"
    assert seed_run.data.tags["ppo_exp.resumed_from"].endswith(f"(iteration {saved})")
    assert 2 <= saved < 6
    history = wd.client().get_metric_history(seed_run.info.run_id, "rollout/reward_mean")
    assert sorted(m.step for m in history) == [1, 2, 3, 4, 5, 6]  # each step once
    assert len(wd.runs("run")) == 2  # trial 0's run became trial 1's; trial 2 has its own
    assert not wd.client().list_artifacts(seed_run.info.run_id, "policy")  # off in studies
    assert trials[1].state == TrialState.COMPLETE and trials[1].value is not None
