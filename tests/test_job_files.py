"""No password of a URL in the files a launch leaves in its folders: Hydra's `.hydra/`
files and `multirun.yaml` (masked by the `MaskSecretsInJobFiles` callback), our logs and
checkpoints; the run itself still works (the password is only masked on disk)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import uuid
from pathlib import Path

import optuna
import pytest
from conftest import TINY_RUN
from test_study import TINY, postgres_url
from test_worker_signals import SECRET, with_password

from ppo_exp.job_files import mask_file
from ppo_exp.locations import mask

MODEL_URL = f"https://user:{SECRET}@models.example.com/m"  # a label: the tiny model loads


def files_holding(folder: Path, text: str) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.is_file() and text.encode() in p.read_bytes()]


def test_mask_hides_escaped_and_plain_passwords_and_mask_file_rewrites_only_what_it_must(
    tmp_path,
):
    escaped = r"model.name=https\://user\:pw@host/m"  # how a sweep job's overrides hold it
    assert mask(escaped) == r"model.name=https\://user\:***@host/m"
    assert mask("postgresql://u:pw@h/db sqlite:////a/b") == "postgresql://u:***@h/db sqlite:////a/b"
    clean, secret = tmp_path / "clean.yaml", tmp_path / "secret.yaml"
    clean.write_text("storage: sqlite:///optuna.db\n")
    secret.write_text("- optuna.storage='postgresql://u:pw@h/db'\n")
    assert not mask_file(clean)
    assert mask_file(secret)
    assert secret.read_text() == "- optuna.storage='postgresql://u:***@h/db'\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clean.yaml", "secret.yaml"]


@contextlib.contextmanager
def launch_args(kind: str):
    """The arguments of a run, a plain sweep or a study with a password in a URL."""
    if kind == "run":
        yield [*TINY_RUN, f"model.name={MODEL_URL}", "hydra.run.dir=outputs/run"]
    elif kind == "sweep":
        yield ["-m", *TINY_RUN, "seed=0,1", f"model.name={MODEL_URL}"]
    else:  # PostgreSQL with trust auth ignores the password
        url, name = with_password(postgres_url()), f"test_masked_{uuid.uuid4().hex[:10]}"
        try:
            yield ["-m", "study=core", *TINY, "hydra.sweeper.n_trials=1",
                   f"hydra.sweeper.storage={url}", f"hydra.sweeper.study_name={name}"]
        finally:
            with contextlib.suppress(KeyError):
                optuna.delete_study(study_name=name, storage=url)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["run", "sweep", "study"])
def test_no_password_in_the_folders_a_launch_leaves(kind, tmp_path, mlflow_uri, base_model_path):
    with launch_args(kind) as args:
        result = subprocess.run([sys.executable, "-m", "ppo_exp.run", *args], cwd=tmp_path,
                                capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    hydra_files = [p for p in tmp_path.rglob("*.yaml") if ".hydra" in p.parts]
    assert len(hydra_files) >= 3  # config, hydra and overrides of each job
    if kind == "sweep":
        assert list(tmp_path.glob("multirun/*/*/multirun.yaml"))
    # job and sweep folders, checkpoints, logs, the MLflow store and its artifacts
    assert files_holding(tmp_path, SECRET) == []
    assert SECRET not in result.stdout + result.stderr
