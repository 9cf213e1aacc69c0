"""CPU threads per training job: jobs running side by side must share the machine's cores.

torch starts with one intra-op thread per core. Two such processes on one machine
oversubscribe it (each runs several times slower), so a job sets
`torch.set_num_threads(threads)` before any tensor work, where `threads` is the config
key, else $OMP_NUM_THREADS when set (the usual way to pin a process's threads), else
the CPU cores this process may use divided by the jobs its launch runs at once on this
machine (at least 1):

- the basic launcher runs one job at a time, in-process: all the cores;
- joblib runs up to `hydra.launcher.n_jobs` processes (-1 = one per core); a study has
  at most `hydra.sweeper.n_jobs` trials × seeds jobs in flight;
- submitit_local starts every job of a launch at once: a study's trials × seeds;
- submitit_slurm gives each job its own allocation: SLURM binds the job to its
  `cpus_per_task` cores, seen as this process's CPU affinity.
"""

from __future__ import annotations

import os

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

STUDY_SWEEPER = "ppo_exp_sweeper"  # in the study sweeper's _target_


def cores() -> int:
    """CPU cores this process may run on (its affinity: a SLURM allocation, taskset...)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS has no affinity
        return os.cpu_count() or 1


def jobs_at_once(hydra: DictConfig, n_cores: int) -> int:
    """How many jobs of this launch run at once on this machine (see the module doc)."""
    launcher = str(hydra.launcher.get("_target_", ""))
    sweeper = hydra.sweeper
    study = STUDY_SWEEPER in str(sweeper.get("_target_", ""))
    in_flight = sweeper.n_jobs * len(sweeper.seeds) if study else None
    if "joblib" in launcher:
        workers = hydra.launcher.n_jobs
        workers = n_cores + 1 + workers if workers < 0 else workers  # joblib's rule for -k
        return min(workers, in_flight) if in_flight else workers
    if "submitit" in launcher and "LocalLauncher" in launcher:
        return in_flight or n_cores
    return 1  # basic: one at a time; slurm: the job's own allocation


def default_threads() -> int:
    """Threads for a job that leaves `threads` unset (outside Hydra: all the cores)."""
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    if not HydraConfig.initialized():
        return cores()
    return max(1, cores() // jobs_at_once(HydraConfig.get(), cores()))


def apply_threads(threads: int | None) -> int:
    """Set torch's intra-op threads to `threads` (None = `default_threads()`); return
    the count torch reports back."""
    import torch

    torch.set_num_threads(threads or default_threads())
    return torch.get_num_threads()
