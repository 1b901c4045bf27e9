"""Where a study lives: a journal file in the run folder by default, or a database URL.

* no URL: ``<run_dir>/study.journal`` (several local processes may share it);
* ``sqlite:///path``, ``postgresql://...``, ``mysql://...``: Optuna's RDB storage, with
  heartbeats so a dead worker's trial is failed and retried by another worker;
* ``redis://...``: a journal kept in Redis.

Artifacts (per-trial charts) go to ``<run_dir>/artifacts`` on the local filesystem; the
folder is made when the first trial runs, so a storage error leaves nothing behind.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.artifacts import FileSystemArtifactStore
from optuna.exceptions import ExperimentalWarning
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend, JournalRedisBackend

from autoprune.errors import AutopruneError

JOURNAL_NAME = "study.journal"
HEARTBEAT_INTERVAL_S = 60
GRACE_PERIOD_S = 180
MAX_RETRY = 2
_RDB_SCHEMES = ("sqlite", "postgresql", "mysql")


@dataclass
class StudyStorage:
    """An opened storage plus what the dashboard and the outputs need to know about it."""

    storage: BaseStorage
    url: str
    artifacts: FileSystemArtifactStore
    artifacts_dir: Path


def journal_url(run_dir: Path) -> str:
    return f"journal:{(run_dir / JOURNAL_NAME).resolve()}"


def open_storage(run_dir: Path, url: str | None = None) -> StudyStorage:
    """Open (creating if needed) the storage for a run; unreachable URLs raise AutopruneError."""
    if url is None:
        run_dir.mkdir(parents=True, exist_ok=True)
        url = journal_url(run_dir)
    storage = _open(url)
    artifacts_dir = run_dir / "artifacts"
    return StudyStorage(storage, url, FileSystemArtifactStore(str(artifacts_dir)), artifacts_dir)


def _open(url: str) -> BaseStorage:
    scheme = url.split(":", 1)[0].split("+", 1)[0].lower()
    if scheme == "journal":
        path = Path(url.split(":", 1)[1])
        return JournalStorage(JournalFileBackend(str(path)))
    if scheme in _RDB_SCHEMES:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                return RDBStorage(
                    url,
                    engine_kwargs={"pool_pre_ping": True} if scheme != "sqlite" else None,
                    heartbeat_interval=HEARTBEAT_INTERVAL_S,
                    grace_period=GRACE_PERIOD_S,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY),
                )
        except ImportError as exc:
            raise AutopruneError(
                f"storage {_redact(url)} needs a database driver that is not installed ({exc.name}); "
                "for PostgreSQL: pip install psycopg2-binary"
            ) from None
        except Exception as exc:  # sqlalchemy raises many kinds; all mean "cannot use this URL"
            raise AutopruneError(f"cannot open storage {_redact(url)}: {_first_line(exc)}") from None
    if scheme in ("redis", "rediss"):
        try:
            import redis

            redis.Redis.from_url(url).ping()  # fail now, not in the middle of the first trial
        except ImportError:
            raise AutopruneError("storage redis:// needs the redis package: pip install redis") from None
        except Exception as exc:
            raise AutopruneError(f"cannot reach storage {_redact(url)}: {_first_line(exc)}") from None
        return JournalStorage(JournalRedisBackend(url))
    raise AutopruneError(
        f"unsupported storage URL {_redact(url)}: use sqlite:///FILE, postgresql://..., mysql://... "
        "or redis://... (no URL: a journal file in the run folder)"
    )


def _redact(url: str) -> str:
    """Hide a password in ``scheme://user:password@host``."""
    head, sep, tail = url.partition("://")
    if "@" in tail and ":" in tail.split("@", 1)[0]:
        user = tail.split("@", 1)[0].split(":", 1)[0]
        tail = f"{user}:***@{tail.split('@', 1)[1]}"
    return f"{head}{sep}{tail}"


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def studies_in(storage: BaseStorage) -> list[str]:
    return [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
