"""Threads and GPUs per job: how many jobs share a machine, and who gets which GPU."""

from __future__ import annotations

import subprocess
import sys

from omegaconf import OmegaConf

from ppo_exp.resources import claim_gpu, jobs_at_once

JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
LOCAL = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"
SLURM = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
BASIC = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
STUDY = {"_target_": "hydra_plugins.ppo_exp_sweeper.OptunaStudySweeper", "n_jobs": 2,
         "seeds": [0, 1]}  # fmt: skip
SWEEP = {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"}


def hydra(launcher: dict, sweeper: dict):
    return OmegaConf.create({"launcher": launcher, "sweeper": sweeper})


def test_jobs_at_once_follow_the_launcher_and_the_study():
    # joblib: its workers (-1 = one per core, -2 = all but one), capped by jobs in flight
    assert jobs_at_once(hydra({"_target_": JOBLIB, "n_jobs": -1}, STUDY), 8) == 4
    assert jobs_at_once(hydra({"_target_": JOBLIB, "n_jobs": -1}, STUDY), 2) == 2
    assert jobs_at_once(hydra({"_target_": JOBLIB, "n_jobs": -2}, SWEEP), 8) == 7
    assert jobs_at_once(hydra({"_target_": JOBLIB, "n_jobs": 3}, SWEEP), 8) == 3
    # submitit_local starts a study's trials x seeds at once; a plain sweep: all cores
    assert jobs_at_once(hydra({"_target_": LOCAL}, STUDY), 8) == 4
    assert jobs_at_once(hydra({"_target_": LOCAL}, SWEEP), 8) == 8
    # in-process, or a SLURM job with its own allocation: alone
    assert jobs_at_once(hydra({"_target_": BASIC}, STUDY), 8) == 1
    assert jobs_at_once(hydra({"_target_": SLURM}, STUDY), 8) == 1


CLAIM = """
import sys, time
from pathlib import Path
from ppo_exp.resources import claim_gpu
print(claim_gpu(2, lock_dir=Path(sys.argv[1])), flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_each_process_claims_a_gpu_of_its_own_until_it_ends(tmp_path):
    def claim(hold: float) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-c", CLAIM, str(tmp_path), str(hold)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip

    first = claim(30)
    assert first.stdout.readline().strip() == "0"
    second = claim(30)
    assert second.stdout.readline().strip() == "1"
    assert claim_gpu(2, lock_dir=tmp_path) in (0, 1)  # a third job shares, with a warning
    assert claim_gpu(2, lock_dir=tmp_path) == claim_gpu(2, lock_dir=tmp_path)  # it keeps it
    first.kill()
    first.wait()
    later = claim(0)  # the first job's GPU is free again once its process is gone
    assert later.stdout.readline().strip() == "0"
    later.wait()
    second.kill()
    second.wait()
