"""Shared fixtures: the cached default model, an isolated MLflow store, and the real CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ppo_exp.task.base_model import tiny_model_path

# Overrides for a training run of a few seconds, for sweep and study tests.
TINY_RUN = [
    "train=smoke",
    "iterations=2",
    "batch_size=8",
    "num_minibatches=2",
    "eval_prompts=8",
    "max_new_tokens=8",
    "sample_every=0",
]


# A reward module whose first call raises (a reward server warming up) and which works
# afterwards: in a study launched in-process, the first trial FAILs and the rest go on.
FLAKY_REWARD = """calls = 0


def score(texts):
    global calls
    calls += 1
    if calls == 1:
        raise RuntimeError("reward server warming up")
    return [len(t) / 10 for t in texts]
"""


class Recorder:
    """A tracker that keeps everything the trainer logs: metrics by step, sample tables."""

    def __init__(self):
        self.metrics: dict[int, dict[str, float]] = {}
        self.samples = []

    def log_metrics(self, metrics, step):
        self.metrics.setdefault(step, {}).update(metrics)

    def log_samples(self, samples, step):
        self.samples.append((step, samples))


@pytest.fixture(autouse=True)
def torch_threads_restored():
    """Every test starts with the thread count the session started with: a job or a
    benchmark run in-process sets torch's (the techniques benchmark, one thread), and
    results depend on it (floating-point order), so no test may hand its count on."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def base_model_path() -> Path:
    """The default tiny review model, built into the default cache once per machine."""
    return tiny_model_path()


@pytest.fixture
def mlflow_uri(tmp_path, monkeypatch) -> str:
    """A fresh sqlite MLflow store in tmp_path, seen by this process and by `run_cli` children."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run `python -m ppo_exp.run <args>` in `cwd`, as a user would, capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", "ppo_exp.run", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
    )
