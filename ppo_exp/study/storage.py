"""Where a study lives, how workers share it, and how dead workers are noticed.

- `sqlite:///optuna.db` (the default, an embedded file), any SQLAlchemy URL
  (`postgresql://host/db` for workers on many machines), or `journal:PATH` for
  Optuna's append-only journal file.
- `budget_lock` makes "count the trials, then ask for one" atomic across workers, so
  N workers on one study create exactly `n_trials` trials, never one more.
- `Heartbeat` keeps a running trial's heartbeat fresh from a background thread; a
  worker killed mid-trial stops beating, and any other worker (or the next launch)
  marks that trial FAIL with `fail_stale_trials`. Heartbeats need an RDB storage.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import sqlalchemy
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial

DEFAULT_STORAGE = "sqlite:///optuna.db"


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
        return JournalStorage(JournalFileBackend(url.removeprefix("journal:")))
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


class Heartbeat:
    """Record a trial's heartbeat every `interval` seconds until stopped."""

    def __init__(self, storage: BaseStorage, trial_id: int, interval: float):
        self._storage, self._trial_id, self._interval = storage, trial_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="optuna-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        if isinstance(self._storage, RDBStorage):
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _beat(self) -> None:
        while not self._stop.is_set():
            self._storage.record_heartbeat(self._trial_id)
            self._stop.wait(self._interval)


def fail_stale_trials(study: optuna.Study, storage: BaseStorage) -> None:
    """Mark FAIL the RUNNING trials whose worker stopped beating (RDB storages only)."""
    if isinstance(storage, RDBStorage):
        optuna.storages.fail_stale_trials(study)
