"""Threads, GPUs and memory per job: how many jobs share a machine, who gets which GPU,
and a job's process keeping the memory it frees."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest
from omegaconf import DictConfig, OmegaConf

from ppo_exp.resources import (
    claim_gpu,
    jobs_at_once,
    keep_freed_memory,
    pinned_threads_override,
    sweep_batch_size,
)

JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
LOCAL = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"
SLURM = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
RAY = "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"
BASIC = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
STUDY = {"_target_": "hydra_plugins.ppo_exp_sweeper.OptunaStudySweeper", "n_jobs": 2,
         "seeds": [0, 1], "parallel_seeds": True}  # fmt: skip
ONE_SEED_AT_A_TIME = {**STUDY, "parallel_seeds": False}  # the default
SWEEP = {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"}


def hydra(launcher: dict, sweeper: dict):
    return OmegaConf.create({"launcher": launcher, "sweeper": sweeper})


def test_jobs_at_once_follow_the_launcher_and_the_study():
    # joblib: its workers (-1 = one per core, -2 = all but one), capped by jobs in flight
    assert jobs_at_once(hydra({"_target_": JOBLIB, "n_jobs": -1}, STUDY), 8) == 4
    assert jobs_at_once(hydra({"_target_": JOBLIB, "n_jobs": -1}, STUDY), 2) == 2
    assert jobs_at_once(hydra({"_target_": JOBLIB, "n_jobs": -2}, SWEEP), 8) == 7
    assert jobs_at_once(hydra({"_target_": JOBLIB, "n_jobs": 3}, SWEEP), 8) == 3
    # a trial's seeds one after another: only its n_jobs trials are in flight
    assert jobs_at_once(hydra({"_target_": JOBLIB, "n_jobs": -1}, ONE_SEED_AT_A_TIME), 8) == 2
    assert jobs_at_once(hydra({"_target_": LOCAL}, ONE_SEED_AT_A_TIME), 8) == 2
    # submitit_local starts a study's trials x seeds at once; an unknown sweep: all cores
    assert jobs_at_once(hydra({"_target_": LOCAL}, STUDY), 8) == 4
    assert jobs_at_once(hydra({"_target_": LOCAL}, SWEEP), 8) == 8
    # Ray: cores / num_cpus per job fit on a machine, capped by the jobs in flight
    ray = {"_target_": RAY, "ray": {"remote": {"num_cpus": 2}}}
    assert jobs_at_once(hydra(ray, STUDY), 8) == 4
    assert jobs_at_once(hydra(ray, STUDY), 4) == 2
    assert jobs_at_once(hydra({"_target_": RAY, "ray": {"remote": {}}}, SWEEP), 8) == 8
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


def plain_sweep(tmp_path, launcher: dict, job: int, task: list[str], **sweeper) -> DictConfig:
    """A plain-sweep job's Hydra config, with the multirun.yaml its driver saved."""
    (tmp_path / "multirun" / "x").mkdir(parents=True, exist_ok=True)
    driver = {"sweeper": {**SWEEP, **sweeper}, "overrides": {"task": task}}
    OmegaConf.save({"hydra": driver}, tmp_path / "multirun" / "x" / "multirun.yaml")
    return OmegaConf.create({
        "launcher": launcher, "sweeper": {**SWEEP, **sweeper}, "job": {"num": job},
        "sweep": {"dir": "multirun/x"}, "runtime": {"cwd": str(tmp_path)},
    })  # fmt: skip


def test_a_plain_sweep_counts_the_jobs_of_its_batch(tmp_path):
    task = ["seed=0,1,2", "lr=1e-3"]  # three jobs
    assert sweep_batch_size(plain_sweep(tmp_path, {}, 0, task)) == 3
    assert sweep_batch_size(plain_sweep(tmp_path, {}, 0, ["lr=1e-3"])) == 1
    # Hydra's batches of max_batch_size: jobs 0-1, then job 2 alone
    assert sweep_batch_size(plain_sweep(tmp_path, {}, 1, task, max_batch_size=2)) == 2
    assert sweep_batch_size(plain_sweep(tmp_path, {}, 2, task, max_batch_size=2)) == 1
    # sweeps in the config's hydra.sweeper.params count too
    params = {"params": {"clip_eps": "0.1,0.2"}}
    assert sweep_batch_size(plain_sweep(tmp_path, {}, 5, task, **params)) == 6
    # no record (another sweeper, or none written): unknown
    assert sweep_batch_size(hydra({"_target_": LOCAL}, SWEEP)) is None


def test_plain_sweep_jobs_share_the_cores_with_the_jobs_running_beside_them(tmp_path):
    joblib_all = {"_target_": JOBLIB, "n_jobs": -1}
    one, three = ["lr=1e-3"], ["seed=0,1,2"]
    assert jobs_at_once(plain_sweep(tmp_path, joblib_all, 0, one), 8) == 1  # not 8 workers
    assert jobs_at_once(plain_sweep(tmp_path, joblib_all, 0, three), 8) == 3
    assert jobs_at_once(plain_sweep(tmp_path, joblib_all, 0, three), 2) == 2  # 2 workers
    assert jobs_at_once(plain_sweep(tmp_path, {"_target_": LOCAL}, 0, one), 8) == 1
    assert jobs_at_once(plain_sweep(tmp_path, {"_target_": LOCAL}, 2, three), 8) == 3
    assert jobs_at_once(plain_sweep(tmp_path, {"_target_": BASIC}, 2, three), 8) == 1


def test_the_shells_omp_num_threads_travels_as_a_hydra_override():
    pin = "++hydra.job.env_set.OMP_NUM_THREADS=3"
    assert pinned_threads_override({"OMP_NUM_THREADS": "3"}, ["-m", "seed=0,1"]) == [pin]
    assert pinned_threads_override({}, ["-m"]) == []  # unset: each job picks its own
    assert pinned_threads_override({"OMP_NUM_THREADS": "x"}, []) == []
    given = ["hydra.job.env_set.OMP_NUM_THREADS=2"]  # the command sets it itself
    assert pinned_threads_override({"OMP_NUM_THREADS": "3"}, given) == []
    # commands that run no job; `--info` would take the override as its argument
    assert pinned_threads_override({"OMP_NUM_THREADS": "3"}, ["--info"]) == []


# One process: 24 tensors of 4 MB written and freed, five times after two warm-up rounds
# (the pattern of one phase's activations); prints the page faults of the five rounds.
PHASE_LOOP = """
import resource, sys, torch
from ppo_exp.resources import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def phase():
    tensors = [torch.ones(2**20) for _ in range(24)]
    del tensors
phase(); phase()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    phase()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def phase_faults(mode: str) -> int:
    ran = subprocess.run([sys.executable, "-c", PHASE_LOOP, mode], capture_output=True,
                         text=True, check=True)
    return int(ran.stdout.split()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_a_job_reuses_the_pages_it_freed_instead_of_faulting_them_in_again():
    # glibc's own thresholds hand the 96 MB back after each round, whatever the process
    # freed before (more free memory at the heap's top than twice the largest block glibc
    # lets its threshold follow, 32 MB): every round faults its 24,576 pages in again.
    # In about one process in four a block left at the heap's top by chance pins it (the
    # default then faults only ~1,024 pages), so the default is tried until it shows that.
    faulted_afresh = 5 * 24 * 1024 * 0.8  # most of 5 rounds' pages
    released = 0
    for _ in range(5):
        released = phase_faults("default")
        if released > faulted_afresh:
            break
    kept = phase_faults("keep")
    assert released > faulted_afresh, released
    assert kept < released / 20, (kept, released)


def test_a_users_own_malloc_settings_are_left_alone():
    assert not keep_freed_memory({"MALLOC_TRIM_THRESHOLD_": "1000000"})
    assert not keep_freed_memory({"MALLOC_MMAP_THRESHOLD_": "65536"})
    assert not keep_freed_memory({"MALLOC_MMAP_MAX_": "0"})
    assert not keep_freed_memory({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1000000"})
