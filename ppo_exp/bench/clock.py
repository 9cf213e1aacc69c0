"""Phase timing without touching the code under test: wrap callables, sum their wall time.

Every wrapper adds its name to a path ("update/backward"), so the same callable is told
apart by where it ran (the policy forward inside `generate` is not a scoring forward).
Timings are wall-clock (`time.perf_counter`) or, with `clock="cpu"`, this process's CPU
time (`time.process_time`): on CPU every torch op is synchronous, so the time spent in a
call is the time its kernels took; CPU time leaves out the time other processes held
the cores, which makes figures taken on a loaded machine comparable (with one thread
per run; with several it adds the threads' times up). On a GPU, kernels run
asynchronously: `clock="cuda"` waits for the device (`torch.cuda.synchronize`) before
each reading, so each call is charged the kernels it launched.
"""

from __future__ import annotations

import contextlib
import resource
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

# The phases of one PPO iteration, in order; every benchmarked system reports these.
PHASES = (
    "generate",  # sampling the responses (KV-cached decoding)
    "score_policy",  # policy forward over prompt + response (log-probs, entropy)
    "score_critic",  # critic forward (values)
    "score_reference",  # reference forward (KL penalty)
    "score_reward",  # reward model
    "rollout_other",  # decode, masks, tokenising for the reward, copies
    "gae",  # KL penalty, advantages and returns
    "update_forward",  # policy + critic forwards of the replay minibatches
    "update_loss",  # log-probs, losses and their statistics
    "update_backward",
    "update_clip",  # gradient-norm clipping
    "update_step",  # optimiser steps
    "logging",  # handing the metrics to the trackers (MLflow)
    "gc",  # explicit garbage collection (TRL)
    "other",  # the rest of the iteration: metrics, shuffling, the loop itself
)


def to_phases(timed: dict[str, float], wall: float, mapping: dict[str, str]) -> dict[str, float]:
    """Canonical phases from a clock's paths: `mapping` sends each path to a phase;
    a path's time is taken out of its enclosing path's phase so nothing counts twice,
    and whatever no path covers is `other`.

    Args:
        timed: seconds per path, from `PhaseClock.take()`.
        wall: the iteration's wall time (seconds).
        mapping: path -> phase, e.g. {"rollout": "rollout_other",
            "rollout/generate": "generate"}; paths not listed are ignored.
    """
    phases = dict.fromkeys(PHASES, 0.0)
    for path, seconds in timed.items():
        if path not in mapping:
            continue
        phases[mapping[path]] += seconds
        parent = path.rpartition("/")[0]
        while parent and parent not in mapping:
            parent = parent.rpartition("/")[0]
        if parent:
            phases[mapping[parent]] -= seconds
    top = sum(s for p, s in timed.items() if p in mapping and "/" not in p)
    phases["other"] += wall - top
    return phases


def _cuda_now() -> float:
    import torch

    torch.cuda.synchronize()
    return time.perf_counter()


class PhaseClock:
    """Accumulates seconds per call path, e.g. {"rollout/generate": 0.8, "update": 2.1}."""

    def __init__(self, clock: str = "wall") -> None:
        """`clock`: "wall" (time.perf_counter), "cpu" (this process's CPU time) or "cuda"
        (wall time once the GPU has finished the work queued so far)."""
        clocks = {"wall": time.perf_counter, "cpu": time.process_time, "cuda": _cuda_now}
        if clock not in clocks:
            raise ValueError(f"invalid clock={clock!r}; accepted: 'wall' | 'cpu' | 'cuda'")
        self.now = clocks[clock]
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._path: list[str] = []

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """`fn`, timed under `<current path>/name` each time it is called."""

        def timed(*args: Any, **kwargs: Any) -> Any:
            self._path.append(name)
            key = "/".join(self._path)
            started = self.now()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[key] += self.now() - started
                self.calls[key] += 1
                self._path.pop()

        timed.__wrapped__ = fn  # type: ignore[attr-defined]
        return timed

    def take(self) -> dict[str, float]:
        """The seconds accumulated since the last `take()`, and start afresh."""
        seconds = dict(self.seconds)
        self.seconds.clear()
        self.calls.clear()
        return seconds


@contextlib.contextmanager
def patched(owner: Any, attribute: str, replacement: Any) -> Iterator[None]:
    """Set `owner.attribute = replacement` for the duration of the block, then restore it."""
    had_own = attribute in vars(owner) if hasattr(owner, "__dict__") else False
    original = getattr(owner, attribute)
    setattr(owner, attribute, replacement)
    try:
        yield
    finally:
        if had_own or isinstance(owner, type) or isinstance(owner, type(sys)):
            setattr(owner, attribute, original)
        else:
            delattr(owner, attribute)  # back to the class's own method


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB.

    Read from /proc (VmHWM, this program's own peak): `getrusage`'s ru_maxrss survives
    `exec`, so a run started by a big parent (the driver that built the models) would
    report the parent's peak instead of its own.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    """Resident set size of this process now, in MB (from /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
    except OSError:
        return 0.0
    return pages * resource.getpagesize() / 2**20


@dataclass(frozen=True)
class Startup:
    """What starting a benchmarked system cost, measured the same way for every system."""

    imports_s: float  # importing torch, transformers and the system itself
    rss_after_imports_mb: float


def after_imports(started: float, threads: int) -> Startup:
    """Set torch's intra-op threads, then measure the imports since `started`."""
    import torch

    torch.set_num_threads(threads)
    return Startup(time.perf_counter() - started, current_rss_mb())


def result(
    system: str,
    iterations: list[dict],
    startup: Startup,
    *,
    init_s: float,
    harness_s: float = 0.0,
    **extra: Any,
) -> dict[str, Any]:
    """One system's run, as every system reports it (see `suite.summarise`).

    Args:
        system: "ppo_exp", "floor" or "trl".
        iterations: one dict per iteration: step, wall_s, phases, response_tokens.
        startup: from `after_imports`.
        init_s: building the models and the trainer.
        harness_s: the harness around training (MLflow run and logging setup).
        extra: system-specific fields (TRL's version and optimiser).
    """
    import torch

    return {
        "system": system,
        **extra,
        "iterations": iterations,
        "imports_s": startup.imports_s,
        "init_s": init_s,
        "harness_s": harness_s,
        "rss_after_imports_mb": startup.rss_after_imports_mb,
        "peak_rss_mb": peak_rss_mb(),
        "threads": torch.get_num_threads(),
    }
