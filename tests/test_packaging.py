"""The package installs like one: a wheel carries the configs, studies and notebooks, and
its commands work from a directory outside the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest
from conftest import TINY_RUN

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # Built from a copy of the tracked tree: a stale build/ of the checkout cannot leak in.
    source = tmp_path_factory.mktemp("source") / "ppo_exp"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "__pycache__", "mlflow.db", "outputs", "multirun"
    ))
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(source)],
        check=True,
    )
    (found,) = out.glob("ppo_exp-*.whl")
    return found


def test_wheel_ships_configs_studies_notebooks_and_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for shipped in (
        "ppo_exp/conf/config.yaml",
        "ppo_exp/conf/study_base.yaml",
        "ppo_exp/conf/gae/mc.yaml",
        "ppo_exp/studies/core.yaml",
        "ppo_exp/notebooks/sensitivity.ipynb",
        "ppo_exp/task/reviews.yaml",  # the review grammar's words
        "ppo_exp/config/sections.py",
        "hydra_plugins/ppo_exp_sweeper/__init__.py",
    ):
        assert shipped in names, shipped
    assert not any(name.startswith(("tests/", "analysis/reports")) for name in names)


@pytest.mark.slow
def test_installed_wheel_runs_and_studies_outside_the_checkout(wheel, tmp_path, base_model_path):
    # A fresh environment that sees the already installed dependencies (torch & co.) but
    # gets ppo_exp from the wheel alone.
    env_dir = tmp_path / "venv"
    venv.create(env_dir, system_site_packages=True, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [python, *args], cwd=work, env=env, capture_output=True, text=True, timeout=900
        )

    where = run("-c", "import ppo_exp, importlib.resources as r; "
                      "print(ppo_exp.__file__); print(r.files('ppo_exp.conf'))")
    assert where.returncode == 0, where.stderr
    assert all(str(env_dir) in line for line in where.stdout.split()), where.stdout

    single = run("-m", "ppo_exp.run", "train=smoke", "hydra.run.dir=outputs/run")
    assert single.returncode == 0, single.stderr[-3000:]
    assert "objective eval/reward_mean" in single.stderr + single.stdout

    study = run("-m", "ppo_exp.run", "-m", "study=core", *TINY_RUN,
                "hydra.sweeper.n_trials=2", "hydra.sweeper.seeds=[0]")
    assert study.returncode == 0, study.stderr[-3000:]
    assert (work / "optuna.db").exists()
    assert sorted(p.name for p in (work / "multirun" / "study_core").iterdir()) == ["0", "1"]
