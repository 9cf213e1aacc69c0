"""The job processes of a study worker stopped by a signal: told to stop, then gone.

With a launcher that runs jobs in processes of their own (joblib's loky workers,
submitit_local), SIGTERM or Ctrl-C reaches the worker only. Its trials are failed at once
(`in_flight.TrialsInFlight.abandon`), but its jobs would train on, and the worker would
wait for them before it exits. `stop_jobs` sends SIGTERM on to every process under this
one: each job ends its MLflow run KILLED itself (`lifecycle.stop_on_signals`). The worker
waits a few seconds for them, then kills those left, so that it exits in bounded time.

A process that ignores SIGTERM (loky's resource tracker) is not waited for: it ends when
the worker does.
"""

from __future__ import annotations

import contextlib
import logging
import signal
from pathlib import Path

import psutil

log = logging.getLogger("ppo_exp")
GRACE_S = 10.0  # how long stopped jobs get to end their runs


def stop_jobs(signum: int = signal.SIGTERM, grace_s: float = GRACE_S) -> list[int]:
    """Send `signum` to every process under this one, wait up to `grace_s` seconds for
    those that do not ignore it to end, and SIGKILL those still alive.

    Returns:
        The process ids that had to be killed.
    """
    told = []
    for process in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            if not ignores(process.pid, signum):
                process.send_signal(signum)
                told.append(process)
    if not told:
        return []
    log.info("stopping %d job process(es) with %s", len(told), signal.Signals(signum).name)
    _, alive = psutil.wait_procs(told, timeout=grace_s)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    if alive:
        log.warning("killed %d job process(es) still running after %.0f s", len(alive), grace_s)
    return [p.pid for p in alive]


def ignores(pid: int, signum: int) -> bool:
    """Whether process `pid` ignores `signum` (Linux: its SigIgn mask; elsewhere False)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    for line in status.splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False
