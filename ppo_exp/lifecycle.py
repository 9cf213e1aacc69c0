"""A run's life in MLflow beyond success and error: stopped by a signal, or killed.

- `stop_on_signals`: SIGTERM (what SLURM and Kubernetes send before they kill) raises
  `Stopped` in the main thread, as Ctrl-C raises KeyboardInterrupt, so the job unwinds
  and its MLflow run ends KILLED with the signal's name instead of staying RUNNING.
- `Heartbeat`: a RUNNING run's tag `ppo_exp.heartbeat` is refreshed every
  HEARTBEAT_S seconds; `close_stale_runs`, called when a run starts, marks FAILED the
  RUNNING runs of the experiment whose heartbeat is older than STALE_S (their process
  was SIGKILLed or its machine died).
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator

HEARTBEAT_TAG = "ppo_exp.heartbeat"
HEARTBEAT_S = 30.0  # seconds between a running run's heartbeats
STALE_S = 4 * HEARTBEAT_S  # a RUNNING run silent this long has no process any more


class Stopped(BaseException):
    """The process was asked to stop by a signal (a BaseException, like KeyboardInterrupt)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    def __reduce__(self) -> tuple:  # a job process's Stopped reaches its launcher whole
        return Stopped, (self.signum,)


def stopped_by(stop: BaseException) -> str:
    """The name of the signal behind `stop`: a `Stopped`, or KeyboardInterrupt (SIGINT)."""
    return signal.Signals(getattr(stop, "signum", signal.SIGINT)).name


@contextlib.contextmanager
def stop_on_signals(signums: tuple[int, ...] = (signal.SIGTERM,)) -> Iterator[None]:
    """Within the block, `signums` raise `Stopped` (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise Stopped(signum)

    previous = {s: signal.signal(s, handler) for s in signums}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


class Heartbeat:
    """Refresh the run's heartbeat tag from a background thread until stopped."""

    def __init__(self, run_id: str, interval: float = HEARTBEAT_S):
        self.run_id, self.interval = run_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="mlflow-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        from mlflow.tracking import MlflowClient

        client = MlflowClient()
        while True:
            with contextlib.suppress(Exception):  # a missed beat is not worth a crash
                client.set_tag(self.run_id, HEARTBEAT_TAG, f"{time.time():.0f}")
            if self._stop.wait(self.interval):
                return


def close_stale_runs(experiment_id: str, *, now: float | None = None) -> list[str]:
    """Mark FAILED the RUNNING job runs whose heartbeat is older than STALE_S.

    Returns:
        The ids of the runs closed.
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    now = time.time() if now is None else now
    closed = []
    for run in client.search_runs(
        [experiment_id], "attributes.status = 'RUNNING' and tags.`ppo_exp.kind` = 'run'"
    ):
        beat = float(run.data.tags.get(HEARTBEAT_TAG, run.info.start_time / 1000))
        if now - beat > STALE_S:
            client.set_tag(
                run.info.run_id, "ppo_exp.error",
                f"stale: no heartbeat for {now - beat:.0f} s (its process was killed)",
            )
            client.set_terminated(run.info.run_id, status="FAILED")
            closed.append(run.info.run_id)
    return closed
