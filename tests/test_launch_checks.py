"""Launch hygiene: Hydra's own log lines masked, a refused run's folder removed."""

from __future__ import annotations

import logging

import pytest
from omegaconf import OmegaConf

from ppo_exp.launch_checks import mask_secrets_in_log_records, remove_run_dir


@pytest.fixture
def record_factory():
    """Restore logging's record factory after the test (it is process-wide)."""
    factory = logging.getLogRecordFactory()
    yield
    logging.setLogRecordFactory(factory)


def test_hydras_launch_lines_are_masked(record_factory, caplog):
    mask_secrets_in_log_records()
    mask_secrets_in_log_records()  # a second multirun in this process: one mask, not two
    launcher = logging.getLogger("hydra._internal.core_plugins.basic_launcher")
    with caplog.at_level(logging.INFO):
        launcher.info("\t#%d : %s", 0, "optuna.storage='postgresql://u:hunter2@db/x' seed=0")
        launcher.info("Launching %d jobs locally", 2)
    assert caplog.messages == [
        "\t#0 : optuna.storage='postgresql://u:***@db/x' seed=0",
        "Launching 2 jobs locally",
    ]


def hydra_node(output_dir, **job):
    return OmegaConf.create(
        {"runtime": {"output_dir": str(output_dir)}, "output_subdir": ".hydra",
         "job": {"name": "run", **job}}
    )


def test_a_refused_run_leaves_no_new_folder_and_keeps_older_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "outputs" / "2026-01-01" / "00-00-00"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text("gamma: 1.5\n")
    (run_dir / "run.log").write_text("")
    (tmp_path / "outputs" / "2026-01-01" / "00-00-01").mkdir()  # another run's folder
    remove_run_dir(hydra_node(run_dir))
    assert not (tmp_path / "outputs" / "2026-01-01" / "00-00-00").exists()
    assert (tmp_path / "outputs" / "2026-01-01" / "00-00-01").is_dir()

    resumed = tmp_path / "job"  # hydra.run.dir=job, an earlier run's folder (resume=auto)
    (resumed / ".hydra").mkdir(parents=True)
    (resumed / "run.log").write_text("[INFO] iteration 3\n")
    remove_run_dir(hydra_node(resumed))
    assert (resumed / "run.log").read_text() and (resumed / ".hydra").is_dir()

    mine = tmp_path / "mine"  # a folder with the user's own files
    (mine / ".hydra").mkdir(parents=True)
    (mine / "notes.txt").write_text("keep")
    remove_run_dir(hydra_node(mine))
    assert sorted(p.name for p in mine.iterdir()) == [".hydra", "notes.txt"]
