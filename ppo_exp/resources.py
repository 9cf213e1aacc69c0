"""CPU threads per training job: jobs running side by side must share the machine's cores.

torch starts with one intra-op thread per core. Two such processes on one machine
oversubscribe it (each runs several times slower), so a job sets
`torch.set_num_threads(threads)` before any tensor work, where `threads` is the config
key, else $OMP_NUM_THREADS of the shell that started the command when set (the usual
way to pin a process's threads; `run.cli` hands it to every job as
`hydra.job.env_set.OMP_NUM_THREADS`, because joblib gives its workers an
OMP_NUM_THREADS of its own, cores ÷ workers, when the shell has none), else the CPU
cores this process may use divided by the jobs its launch runs at once on this machine
(at least 1):

- the basic launcher runs one job at a time, in-process: all the cores;
- joblib runs up to `hydra.launcher.n_jobs` processes (-1 = one per core) at once, and
  never more than the jobs in flight: a study's `hydra.sweeper.n_jobs` trials (× their
  seeds with `hydra.sweeper.parallel_seeds`), a plain sweep's batch (all its jobs, or
  `hydra.sweeper.max_batch_size` of them);
- submitit_local starts every job in flight at once;
- Ray runs a job on a machine with `hydra.launcher.ray.remote.num_cpus` free CPUs (1
  unless set): at most cores / num_cpus jobs there, and never more than the jobs in flight;
- submitit_slurm gives each job its own allocation: SLURM binds the job to its
  `cpus_per_task` cores, seen as this process's CPU affinity.

GPUs likewise: where several jobs run at once on a machine with several GPUs, each job
claims a GPU of its own (`claim_gpu`: a lock file per GPU, held for the life of the job's
process and released by the system when it ends) and makes it torch's current device,
so `model.device=auto` (or `cuda`) means that GPU. SLURM jobs get theirs from
`gpus_per_node`.

Memory: a job's process keeps the memory it frees for its next allocations
(`keep_freed_memory`), rather than glibc's default of handing large blocks back to the
system after each use and faulting them in afresh in the next phase.
"""

from __future__ import annotations

import ctypes
import fcntl
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("ppo_exp")
OMP = "OMP_NUM_THREADS"
# Hydra's flags that print and run no job (the override is left off for them)
NO_JOBS = {"-h", "--help", "--hydra-help", "--version", "-c", "--cfg", "-i", "--info",
           "-sc", "--shell-completion"}  # fmt: skip
STUDY_SWEEPER = "ppo_exp_sweeper"  # in the study sweeper's _target_
# glibc's mallopt parameters, and the values `keep_freed_memory` sets
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
TRIM_THRESHOLD = 256 * 2**20  # free memory the heap keeps at its top
MMAP_THRESHOLD = 32 * 2**20  # glibc's largest: blocks below it come from the heap
MALLOC_ENVIRONMENT = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_",
                      "MALLOC_MMAP_MAX_")  # a user's own settings of the same behaviour
_claimed: dict[Path, tuple[int, IO]] = {}  # lock dir -> this process's GPU and its lock


def cores() -> int:
    """CPU cores this process may run on (its affinity: a SLURM allocation, taskset...)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS has no affinity
        return os.cpu_count() or 1


def jobs_at_once(hydra: DictConfig, n_cores: int) -> int:
    """How many jobs of this launch run at once on this machine (see the module doc)."""
    launcher = str(hydra.launcher.get("_target_", ""))
    if "joblib" in launcher:
        workers = hydra.launcher.n_jobs
        workers = n_cores + 1 + workers if workers < 0 else workers  # joblib's rule for -k
        in_flight = jobs_in_flight(hydra)
        return min(workers, in_flight) if in_flight else workers
    if "submitit" in launcher and "LocalLauncher" in launcher:
        return jobs_in_flight(hydra) or n_cores
    if "hydra_ray_launcher" in launcher:  # Ray fits cores / num_cpus jobs on a machine
        per_job = OmegaConf.select(hydra, "launcher.ray.remote.num_cpus") or 1
        fit = max(1, n_cores // per_job)
        in_flight = jobs_in_flight(hydra)
        return min(fit, in_flight) if in_flight else fit
    return 1  # basic: one at a time; slurm: the job's own allocation


def jobs_in_flight(hydra: DictConfig) -> int | None:
    """The most jobs this launch hands its launcher at once, None if unknown."""
    sweeper = hydra.sweeper
    if STUDY_SWEEPER in str(sweeper.get("_target_", "")):
        # trials in flight × their seeds when those run as parallel jobs too
        return sweeper.n_jobs * (len(sweeper.seeds) if sweeper.get("parallel_seeds") else 1)
    return sweep_batch_size(hydra)


def sweep_batch_size(hydra: DictConfig) -> int | None:
    """Jobs in this job's batch of a plain sweep (Hydra's basic sweeper), None if unknown.

    The job's own config holds only its own overrides; the sweep's are in the
    `multirun.yaml` the basic sweeper saves in the sweep directory before launching
    anything. Hydra's own splitting of those overrides into batches gives the batch
    that holds this job's number.
    """
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if "BasicSweeper" not in str(hydra.sweeper.get("_target_", "")):
        return None
    number = OmegaConf.select(hydra, "job.num")
    sweep_dir = OmegaConf.select(hydra, "sweep.dir")
    if number is None or sweep_dir is None:
        return None
    record = Path(OmegaConf.select(hydra, "runtime.cwd") or ".", sweep_dir, "multirun.yaml")
    if not record.is_file():
        return None
    driver = OmegaConf.to_container(OmegaConf.load(record).hydra, resolve=False)
    sweeper = driver["sweeper"]
    params = [f"{key}={value}" for key, value in (sweeper.get("params") or {}).items()]
    overrides = OverridesParser.create().parse_overrides([*params, *driver["overrides"]["task"]])
    first = 0
    for batch in BasicSweeper.split_arguments(overrides, sweeper.get("max_batch_size")):
        if first <= number < first + len(batch):
            return len(batch)
        first += len(batch)
    return None


def pinned_threads_override(environ: Mapping[str, str], argv: list[str]) -> list[str]:
    """The Hydra override that hands this shell's $OMP_NUM_THREADS to every job of the
    command (none when it is unset or the command sets it itself)."""
    value = environ.get(OMP, "")
    if not value.isdigit() or any(f"job.env_set.{OMP}=" in arg for arg in argv):
        return []
    if NO_JOBS.intersection(argv):  # `--info [WHAT]` would take a trailing override as WHAT
        return []
    return [f"++hydra.job.env_set.{OMP}={value}"]


def default_threads() -> int:
    """Threads for a job that leaves `threads` unset (outside Hydra: $OMP_NUM_THREADS,
    else all the cores)."""
    if not HydraConfig.initialized():
        pinned = os.environ.get(OMP, "")
        return max(1, int(pinned)) if pinned.isdigit() else cores()
    hydra = HydraConfig.get()
    pinned = str(hydra.job.env_set.get(OMP, ""))  # the shell's, from run.cli
    if pinned.isdigit():
        return max(1, int(pinned))
    return max(1, cores() // jobs_at_once(hydra, cores()))


def apply_threads(threads: int | None) -> int:
    """Set torch's intra-op threads to `threads` (None = `default_threads()`); return
    the count torch reports back."""
    import torch

    torch.set_num_threads(threads or default_threads())
    return torch.get_num_threads()


def keep_freed_memory(environ: Mapping[str, str] = os.environ) -> bool:
    """Have this process reuse the memory it frees rather than hand it back to the system.

    glibc's malloc returns a freed block to the system when it was mapped on its own (any
    block above a threshold that starts at 128 KB and follows the largest block freed so
    far) or when more than a threshold of free memory lies at the top of the heap; the
    tensors of the next phase, of much the same sizes, then fault fresh zeroed pages in
    again (about 220 thousand page faults per iteration at the 128-token scaling point,
    36 thousand with this). Fixed thresholds of 32 MB (mappings, glibc's largest) and
    256 MB (trimming) keep those pages for reuse. The peak resident memory stays where it
    was (those pages were resident at the peak anyway); the process keeps them between
    phases instead of releasing and faulting them in again.

    Left as it is where the user tunes the same behaviour (`MALLOC_ENVIRONMENT`, or a
    `glibc.malloc` tunable in `GLIBC_TUNABLES`) or where the C library has no `mallopt`
    (macOS; musl's is a no-op).

    Returns:
        Whether both thresholds were set.
    """
    if any(name in environ for name in MALLOC_ENVIRONMENT):
        return False
    if "glibc.malloc" in environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and (
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    )


def claim_gpu(n_gpus: int, *, lock_dir: Path | None = None) -> int:
    """Index of a GPU no other job on this machine holds, claimed for this process.

    A process keeps its GPU: a second call returns the same index. With more jobs than
    GPUs, the last ones share (by process id) and a warning says so.

    Args:
        n_gpus: GPUs on this machine.
        lock_dir: where the lock files live (default: the system's temporary folder).
    Returns:
        The claimed GPU's index, in [0, n_gpus).
    """
    lock_dir = lock_dir or Path(tempfile.gettempdir())
    if lock_dir in _claimed:
        return _claimed[lock_dir][0]
    for index in range(n_gpus):
        handle = open(lock_dir / f"ppo_exp_gpu_{index}.lock", "a")  # kept open: the claim
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        _claimed[lock_dir] = (index, handle)  # held until this process ends
        return index
    log.warning("more jobs than the %d GPUs on this machine: some share a GPU", n_gpus)
    return os.getpid() % n_gpus


def apply_gpu() -> int | None:
    """Give this job a GPU of its own when several run at once here; return its index."""
    import torch

    if not HydraConfig.initialized() or not torch.cuda.is_available():
        return None
    n_gpus = torch.cuda.device_count()
    if n_gpus < 2 or jobs_at_once(HydraConfig.get(), cores()) < 2:
        return None
    index = claim_gpu(n_gpus)
    torch.cuda.set_device(index)
    return index
