"""Where a study lives: any Optuna storage URL, opened with Optuna's own failure handling.

- no `--storage`: one SQLite file, `OUT/study.db` (an RDB storage);
- `sqlite:///FILE`, `postgresql+psycopg://USER@HOST/DB` (the `postgres` extra), any other
  SQLAlchemy URL: an RDB storage with a heartbeat: a trial whose process stops beating (killed,
  out of memory, machine gone) is marked failed after the grace period by the next trial any
  worker starts, and `RetryHeartbeatStaleTrialCallback` queues its parameters again;
- `journal:FILE`: Optuna's JournalStorage on a file (many local processes, no server, no
  heartbeat: a killed worker's trial stays RUNNING and is not retried).
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

from skinclf.errors import ConfigError
from skinclf.extras import require_extra

DB_NAME = "study.db"
JOURNAL = "journal:"
MAX_RETRIES = 2  # a trial whose process keeps dying (e.g. out of memory) is not run forever
GRACE_BEATS = 3  # a trial is stale after this many heartbeat intervals without one


def storage_url(out: Path | None, storage: str | None) -> str:
    """`storage` as a URL, or the study folder's SQLite file."""
    if storage:
        if storage.startswith("postgresql://"):  # SQLAlchemy's default driver is psycopg2
            return "postgresql+psycopg://" + storage.removeprefix("postgresql://")
        return storage
    if out is None:
        raise ConfigError("A study needs --out DIR or --storage URL.")
    return f"sqlite:///{Path(out) / DB_NAME}"


def journal_path(url: str) -> Path | None:
    """The file of a `journal:FILE` (or `journal:///abs/FILE`) URL, else None."""
    if not url.startswith(JOURNAL):
        return None
    rest = url.removeprefix(JOURNAL)
    return Path(rest.removeprefix("//") if rest.startswith("///") else rest)


def open_storage(url: str, heartbeat: int | None = 60):
    """The Optuna storage of `url`; an RDB one beats every `heartbeat` seconds while a trial
    runs (None: no heartbeat, for reading a study)."""
    import optuna

    journal = journal_path(url)
    if journal is not None:
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        journal.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(journal)))
    if url.startswith("postgresql"):
        require_extra("postgres", "A PostgreSQL study (--storage postgresql+psycopg://...)")
    with warnings.catch_warnings():  # heartbeats and retries are marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        beats: dict = {}
        if heartbeat is not None:
            beats = {
                "heartbeat_interval": heartbeat,
                "grace_period": GRACE_BEATS * heartbeat,
                _stale_key(): _retry_callback(optuna),
            }
        engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
        return _connect(lambda: optuna.storages.RDBStorage(url, engine_kwargs=engine, **beats), url)


def _stale_key() -> str:
    import optuna

    if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):  # optuna >= 4.9
        return "heartbeat_stale_trial_callback"
    return "failed_trial_callback"


def _retry_callback(optuna):
    if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):
        return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)
    return optuna.storages.RetryFailedTrialCallback(max_retry=MAX_RETRIES)


def _connect(make, url: str, attempts: int = 3):
    """`make()`, tried again when several workers create a new database's tables at once."""
    import sqlalchemy.exc

    for attempt in range(attempts):
        try:
            return make()
        except sqlalchemy.exc.ArgumentError as exc:
            raise ConfigError(f"--storage {url!r} is not a storage URL ({exc}).") from None
        except (sqlalchemy.exc.DBAPIError, sqlalchemy.exc.IntegrityError) as exc:
            if attempt == attempts - 1:
                first = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
                raise ConfigError(f"Cannot open the study storage {url!r}: {first}.") from None
            time.sleep(1.0 + attempt)
    raise AssertionError("unreachable")


def heartbeat_enabled(storage) -> bool:
    """Whether a killed worker's trial is failed and retried in `storage` (RDB, not journal)."""
    return getattr(storage, "get_heartbeat_interval", lambda: None)() is not None


def first_heartbeat(trial) -> None:
    """Record a trial's heartbeat now, before its settings are chosen: Optuna's heartbeat thread
    writes its first one concurrently, and a trial killed before any has none, so it would never
    be found stale."""
    storage = trial.study._storage
    if heartbeat_enabled(storage):
        storage.record_heartbeat(trial._trial_id)


def study_names(storage) -> list[str]:
    import optuna

    return [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
