"""The real command, end to end: `python -m ppo_exp.run` and `-m` sweeps, tracked in MLflow."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import mlflow
import pytest
from conftest import run_cli
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

SMOKE = ["train=smoke", "hydra.run.dir=outputs/run", "hydra.sweep.dir=multirun/sweep"]


def runs(uri: str):
    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_names=["ppo_exp"], output_format="list")


def test_smoke_run_is_tracked(tmp_path, mlflow_uri, base_model_path):
    result = run_cli(*SMOKE, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = runs(mlflow_uri)
    assert run.info.status == "FINISHED"
    assert run.data.params["clip_eps"] == "0.2"
    assert run.data.params["model"] == "tiny-reviews"
    assert run.data.tags["ppo_exp.kind"] == "run"
    assert run.data.tags["ppo_exp.overrides"].startswith("train=smoke")
    # model.device / model.dtype "auto" as resolved here: no GPU on CI, so the CPU in float32
    assert (run.data.tags["ppo_exp.device"], run.data.tags["ppo_exp.dtype"]) == ("cpu", "float32")
    # glibc's malloc keeps the pages each phase frees for the next (resources.keep_freed_memory)
    kept = platform.libc_ver()[0] == "glibc"
    assert run.data.tags["ppo_exp.keep_freed_memory"] == str(kept).lower()
    # MLflow's own context tags: the commit of this checkout, for reproducibility
    assert len(run.data.tags["mlflow.source.git.commit"]) == 40
    for name in ("eval/reward_mean", "rollout/kl", "policy/clipfrac", "value/explained_var"):
        assert name in run.data.metrics
    client = MlflowClient()
    history = client.get_metric_history(run.info.run_id, "rollout/reward_mean")
    assert [m.step for m in history] == [1, 2, 3]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "samples"} <= artifacts
    assert "objective eval/reward_mean" in result.stderr + result.stdout


START_A_RUN = """
import json, sys
from omegaconf import OmegaConf
from ppo_exp import tracking
from ppo_exp.config import PPOConfig

cfg = PPOConfig()
with tracking.start_run(cfg, OmegaConf.structured(cfg), name="tagged"):
    run = tracking.mlflow.active_run()
    print(json.dumps({"tags": run.data.tags, "ipython": "IPython" in sys.modules}))
"""


def test_a_run_gets_mlflows_context_tags_without_importing_ipython(tmp_path, mlflow_uri):
    # the notebook checks that cannot succeed outside IPython are skipped: they would
    # import IPython (18 MB) to find no kernel
    done = subprocess.run([sys.executable, "-c", START_A_RUN], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    started = json.loads(done.stdout.strip().splitlines()[-1])
    assert not started["ipython"]
    tags = started["tags"]
    assert tags["mlflow.source.type"] == "LOCAL" and tags["mlflow.user"]
    assert tags["mlflow.runName"] == "tagged" and tags["ppo_exp.kind"] == "run"
    (run,) = runs(mlflow_uri)
    assert run.info.run_name == "tagged" and run.info.status == "FINISHED"


def test_multirun_makes_one_run_per_value_under_a_parent(tmp_path, mlflow_uri, base_model_path):
    result = run_cli("-m", "clip_eps=0.1,0.2", *SMOKE, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    all_runs = runs(mlflow_uri)
    (parent,) = [r for r in all_runs if r.data.tags["ppo_exp.kind"] == "sweep"]
    jobs = [r for r in all_runs if r.data.tags["ppo_exp.kind"] == "run"]
    assert parent.info.status == "FINISHED"
    assert len(parent.data.tags["mlflow.source.git.commit"]) == 40
    assert sorted(r.data.params["clip_eps"] for r in jobs) == ["0.1", "0.2"]
    assert {r.data.tags["mlflow.parentRunId"] for r in jobs} == {parent.info.run_id}
    assert all(r.info.status == "FINISHED" for r in jobs)
    assert sorted(r.info.run_name for r in jobs) == [
        "#0 clip_eps=0.1,train=smoke",
        "#1 clip_eps=0.2,train=smoke",
    ]
    # the parent says what it swept, and its Description ranks the runs
    assert parent.info.run_name == "sweep clip_eps=0.1,0.2"
    note = parent.data.tags["mlflow.note.content"]
    assert "**Sweep `clip_eps=0.1,0.2`**: 2 runs, objective `eval/reward_mean`" in note
    assert "| run | `clip_eps` | eval/reward_mean | status |" in note
    best = max(jobs, key=lambda r: r.data.metrics["eval/reward_mean"])
    assert f"**Highest:** {best.info.run_name}" in note


def test_bad_value_fails_in_one_line_before_any_model_loads(tmp_path, mlflow_uri):
    result = run_cli("gamma=1.5", *SMOKE, cwd=tmp_path)
    assert result.returncode == 2
    assert "invalid config: gamma=1.5; accepted: a number in [0, 1]" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "mlflow.db").exists()  # nothing was started


def test_failing_job_leaves_a_failed_run_with_the_error(tmp_path, mlflow_uri, base_model_path):
    (tmp_path / "broken_reward.py").write_text(
        "def score(texts):\n    raise RuntimeError('reward server is down')\n"
    )
    result = run_cli("reward=function", "reward.function=broken_reward:score", *SMOKE, cwd=tmp_path)
    assert result.returncode != 0
    (run,) = runs(mlflow_uri)
    assert run.info.status == "FAILED"
    assert "reward server is down" in run.data.tags["ppo_exp.error"]
    assert run.data.params["reward"] == "broken_reward:score"
