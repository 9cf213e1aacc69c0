"""Benchmarks that print figures (never timed tests).

    python -m ppo_exp.bench                 # the default run, cold and warm
    python -m ppo_exp.bench.study pruning   # studies: pruning against none, best against defaults

Each benchmark launches the real command, `python -m ppo_exp.run`, in a scratch directory
with its own MLflow store, and reads its figures from that store.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path


def tracking_uri(workdir: Path) -> str:
    """The MLflow store of a benchmark's working directory."""
    return f"sqlite:///{workdir.resolve() / 'mlflow.db'}"


def launch(workdir: Path, *args: str, env: dict[str, str] | None = None) -> float:
    """Run `python -m ppo_exp.run ARGS` in workdir, tracked in its own MLflow store, with
    its output appended to workdir/launch.log; return its wall time in seconds."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri(workdir), **(env or {})}
    started = time.perf_counter()
    with open(workdir / "launch.log", "a") as log:
        subprocess.run(
            [sys.executable, "-m", "ppo_exp.run", *args],
            cwd=workdir, env=env, check=True, stdout=log, stderr=subprocess.STDOUT,
        )
    return time.perf_counter() - started
