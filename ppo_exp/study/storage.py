"""Where a study lives, how workers share it, and how dead workers are noticed.

- `sqlite:///optuna.db` (the default, an embedded file), any SQLAlchemy URL
  (`postgresql://host/db` for workers on many machines), or `journal:PATH` for
  Optuna's append-only journal file.
- `budget_lock` makes "count the trials, then ask for one" atomic across workers, so
  N workers on one study create exactly `n_trials` trials, never one more.
- `Heartbeat` keeps a running trial's heartbeat fresh from a background thread; a
  worker killed mid-trial stops beating, and any other worker (or the next launch)
  marks that trial FAIL with `fail_stale_trials`. RDB storages have Optuna's own
  heartbeats; Optuna's journal storage has none, so `JournalWithHeartbeats` keeps a
  trial's last beat in a system attribute (one journal line per beat) behind Optuna's
  heartbeat interface, and a dead journal worker's trial is failed the same way.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import sqlalchemy
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import BaseJournalBackend, JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

DEFAULT_STORAGE = "sqlite:///optuna.db"
HEARTBEAT_ATTR = "ppo_exp:heartbeat"  # a journal trial's last beat, in Unix seconds


def open_storage(
    url: str | None,
    *,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    stale_trial_callback: Callable[[optuna.Study, FrozenTrial], None] | None = None,
) -> BaseStorage:
    """The Optuna storage for `url` (None = DEFAULT_STORAGE in the working directory).

    `stale_trial_callback` runs for each trial failed because its worker stopped beating.
    A training job opens it without heartbeat settings: its sweeper beats for it.
    """
    url = url or DEFAULT_STORAGE
    if url.startswith("journal:"):
        backend = JournalFileBackend(url.removeprefix("journal:"))
        return JournalWithHeartbeats(
            backend,
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            stale_trial_callback=stale_trial_callback,
        )
    return RDBStorage(
        url,
        heartbeat_interval=heartbeat_interval,
        grace_period=grace_period,
        heartbeat_stale_trial_callback=stale_trial_callback,
        engine_kwargs={"pool_pre_ping": True},
    )


def absolute_url(url: str | None) -> str:
    """`url` (None = DEFAULT_STORAGE) with a local file as an absolute path, so that a job
    running in another directory or process opens the same study."""
    url = url or DEFAULT_STORAGE
    path = _local_file(url)
    if path is None or path.is_absolute():
        return url
    prefix = "journal:" if url.startswith("journal:") else "sqlite:///"
    return prefix + str(path.resolve())


def _local_file(url: str) -> Path | None:
    if url.startswith("journal:"):
        return Path(url.removeprefix("journal:"))
    if url.startswith("sqlite:///"):
        return Path(url.removeprefix("sqlite:///"))
    return None


@contextlib.contextmanager
def budget_lock(url: str | None, study_name: str) -> Iterator[None]:
    """Hold a lock shared by every worker of `study_name` on the storage at `url`.

    Local files take an flock on a sibling `.budget.lock` file (never `<journal>.lock`,
    which Optuna's journal storage takes for every write: sharing it made each write wait
    30 s and break the lock); PostgreSQL and MySQL take a
    server-side advisory lock, so workers on different machines exclude each other too.
    """
    url = url or DEFAULT_STORAGE
    if path := _local_file(url):
        lock_path = path.with_name(path.name + ".budget.lock")
        with open(lock_path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return
    key = int.from_bytes(hashlib.sha256(study_name.encode()).digest()[:7], "big")
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    dialect = engine.dialect.name
    lock, unlock = {
        "postgresql": ("SELECT pg_advisory_lock(:k)", "SELECT pg_advisory_unlock(:k)"),
        "mysql": ("SELECT GET_LOCK(:k, -1)", "SELECT RELEASE_LOCK(:k)"),
        "mariadb": ("SELECT GET_LOCK(:k, -1)", "SELECT RELEASE_LOCK(:k)"),
    }.get(dialect, (None, None))
    if lock is None:
        raise ValueError(
            f"invalid config: hydra.sweeper.storage={url!r}; accepted: "
            "sqlite:///FILE, journal:FILE, postgresql://..., mysql://..."
        )
    params = {"k": key if dialect == "postgresql" else f"ppo_exp:{study_name}"}
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text(lock), params)
        try:
            yield
        finally:
            conn.execute(sqlalchemy.text(unlock), params)
    engine.dispose()


class JournalWithHeartbeats(JournalStorage, BaseHeartbeat):
    """Optuna's journal storage with the heartbeats its RDB storage has.

    A beat is the trial's system attribute `HEARTBEAT_ATTR` (the beating machine's
    clock); a RUNNING trial that has beaten, whose last beat is older than
    `grace_period` seconds (default: two intervals), is stale, as in `RDBStorage`.
    """

    def __init__(
        self,
        backend: BaseJournalBackend,
        *,
        heartbeat_interval: int | None = None,
        grace_period: int | None = None,
        stale_trial_callback: Callable[[optuna.Study, FrozenTrial], None] | None = None,
    ):
        super().__init__(backend)
        self.heartbeat_interval, self.grace_period = heartbeat_interval, grace_period
        self.stale_trial_callback = stale_trial_callback

    def record_heartbeat(self, trial_id: int) -> None:
        self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        grace = self.grace_period or 2 * (self.heartbeat_interval or 0)
        now = time.time()
        return [
            trial._trial_id
            for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
            if now - trial.system_attrs.get(HEARTBEAT_ATTR, now) > grace
        ]

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(
        self,
    ) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        return self.stale_trial_callback


class Heartbeat:
    """Record a trial's heartbeat every `interval` seconds until stopped."""

    def __init__(self, storage: BaseStorage, trial_id: int, interval: float):
        self._storage, self._trial_id, self._interval = storage, trial_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="optuna-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        if isinstance(self._storage, BaseHeartbeat):
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _beat(self) -> None:
        while not self._stop.is_set():
            # A trial another worker failed by mistake (its beats were late) cannot beat:
            # this worker finds out when it tells the trial's result.
            with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                self._storage.record_heartbeat(self._trial_id)
            self._stop.wait(self._interval)


def fail_stale_trials(study: optuna.Study, storage: BaseStorage) -> None:
    """Mark FAIL the RUNNING trials whose worker stopped beating (RDB and journal)."""
    if isinstance(storage, BaseHeartbeat):
        optuna.storages.fail_stale_trials(study)
