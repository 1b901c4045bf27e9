"""Where a study lives: a journal file in the run folder by default, or a database URL.

* no URL: ``<run_dir>/study.journal`` (several local processes may share it; appends are
  serialized by an ``flock`` on ``study.journal.flock``, which the kernel releases when its
  holder dies, so a killed worker never stalls the others -- Optuna's default symlink lock
  would leave a stale lock for 30 s. Other programs that write the journal must open it
  with :func:`open_storage` too);
* ``sqlite:///path``, ``postgresql://...``, ``mysql://...``: Optuna's RDB storage, with
  heartbeats so a dead worker's trial is failed and retried by another worker;
  ``postgresql://`` uses the psycopg (3) driver when it is installed
  (``pip install 'autoprune[postgres]'``);
* ``redis://...``: a journal kept in Redis.

Heartbeats: a running trial records one every :data:`HEARTBEAT_INTERVAL_S` seconds; a trial
silent for :data:`GRACE_PERIOD_S` is failed and its parameters queued again (once, see
:data:`MAX_RETRY`). Both can be set per call or with the environment variables
``AUTOPRUNE_HEARTBEAT_S`` and ``AUTOPRUNE_GRACE_S`` (whole seconds). Journal storages have no
heartbeat; :mod:`autoprune.search.liveness` covers them on one host.

Artifacts (per-trial charts) go to ``<run_dir>/artifacts`` on the local filesystem; the
folder is made when the first trial runs, so a storage error leaves nothing behind.

URLs may carry a password: show them only through :func:`redact`.
"""

from __future__ import annotations

import importlib.util
import os
import re
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import optuna
from optuna.artifacts import FileSystemArtifactStore
from optuna.exceptions import ExperimentalWarning
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend, JournalRedisBackend
from optuna.storages.journal._file import BaseJournalFileLock

from autoprune.errors import AutopruneError

JOURNAL_NAME = "study.journal"
HEARTBEAT_INTERVAL_S = 60
GRACE_PERIOD_S = 180
HEARTBEAT_ENV = "AUTOPRUNE_HEARTBEAT_S"
GRACE_ENV = "AUTOPRUNE_GRACE_S"
# A dead worker's plan runs once more; if that run dies too, the plan itself is the likely cause
# (out of memory, say) and it stays FAIL.
MAX_RETRY = 1
# Per process: the trial thread and the heartbeat thread each hold one connection.
POOL_SIZE = 2
POOL_MAX_OVERFLOW = 2
_RDB_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql")
_POSTGRES_HINT = "for PostgreSQL: pip install 'autoprune[postgres]'"


@dataclass
class StudyStorage:
    """An opened storage plus what the dashboard and the outputs need to know about it."""

    storage: BaseStorage
    url: str
    artifacts: FileSystemArtifactStore
    artifacts_dir: Path

    @property
    def shown_url(self) -> str:
        """The URL with any password hidden: the form for messages, logs and output files."""
        return redact(self.url)


def journal_url(run_dir: Path) -> str:
    return f"journal:{(run_dir / JOURNAL_NAME).resolve()}"


def open_storage(
    run_dir: Path,
    url: str | None = None,
    *,
    heartbeat_s: int | None = None,
    grace_s: int | None = None,
) -> StudyStorage:
    """Open (creating if needed) the storage for a run; unreachable URLs raise AutopruneError.

    ``heartbeat_s``/``grace_s`` apply to RDB storages; ``None`` takes ``AUTOPRUNE_HEARTBEAT_S``
    / ``AUTOPRUNE_GRACE_S`` from the environment, else the module defaults.
    """
    if url is None:
        run_dir.mkdir(parents=True, exist_ok=True)
        url = journal_url(run_dir)
    storage = _open(url, heartbeat_settings(heartbeat_s, grace_s))
    artifacts_dir = run_dir / "artifacts"
    from autoprune.search.outputs import AtomicFileSystemArtifactStore  # writes via temp file + rename

    return StudyStorage(storage, url, AtomicFileSystemArtifactStore(artifacts_dir), artifacts_dir)


def heartbeat_settings(heartbeat_s: int | None = None, grace_s: int | None = None) -> tuple[int, int]:
    """(heartbeat interval, grace period) in seconds: arguments, else environment, else defaults."""
    heartbeat = heartbeat_s if heartbeat_s is not None else _env_seconds(HEARTBEAT_ENV, HEARTBEAT_INTERVAL_S)
    grace = grace_s if grace_s is not None else _env_seconds(GRACE_ENV, GRACE_PERIOD_S)
    for name, value in (("heartbeat interval", heartbeat), ("grace period", grace)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise AutopruneError(f"storage {name} must be a positive whole number of seconds, got {value!r}")
    if grace <= heartbeat:
        raise AutopruneError(
            f"storage grace period ({grace} s) must be longer than the heartbeat interval ({heartbeat} s)"
        )
    return heartbeat, grace


def _env_seconds(name: str, default: int) -> int:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise AutopruneError(f"{name}={text!r}: expected a whole number of seconds") from None


def sqlalchemy_url(url: str) -> str:
    """The URL handed to SQLAlchemy: ``postgres(ql)://`` gets the psycopg 3 driver when installed.

    An explicit driver (``postgresql+psycopg2://``) is kept; without psycopg the URL is left to
    SQLAlchemy's default driver, whose absence is reported with an install hint.
    """
    scheme, sep, rest = url.partition("://")
    if sep and scheme.lower() in ("postgresql", "postgres"):
        if importlib.util.find_spec("psycopg") is not None:
            return f"postgresql+psycopg://{rest}"
        return f"postgresql://{rest}"
    return url


def _open(url: str, heartbeat: tuple[int, int]) -> BaseStorage:
    scheme = url.split(":", 1)[0].split("+", 1)[0].lower()
    if scheme == "journal":
        path = Path(url.split(":", 1)[1])
        return JournalStorage(JournalFileBackend(str(path), lock_obj=_journal_lock(path)))
    if scheme in _RDB_SCHEMES:
        interval, grace = heartbeat
        engine_kwargs = None
        if scheme != "sqlite":
            engine_kwargs = {
                "pool_size": POOL_SIZE,
                "max_overflow": POOL_MAX_OVERFLOW,
                "pool_pre_ping": True,
                "pool_recycle": 1800,
            }
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                return RDBStorage(
                    sqlalchemy_url(url),
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=interval,
                    grace_period=grace,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY),
                )
        except ImportError as exc:
            raise AutopruneError(
                f"storage {redact(url)} needs a database driver that is not installed ({exc.name}); "
                + _POSTGRES_HINT
            ) from None
        except Exception as exc:  # sqlalchemy raises many kinds; all mean "cannot use this URL"
            raise AutopruneError(f"cannot open storage {redact(url)}: {_first_line(exc, url)}") from None
    if scheme in ("redis", "rediss"):
        try:
            import redis

            redis.Redis.from_url(url).ping()  # fail now, not in the middle of the first trial
        except ImportError:
            raise AutopruneError("storage redis:// needs the redis package: pip install redis") from None
        except Exception as exc:
            raise AutopruneError(f"cannot reach storage {redact(url)}: {_first_line(exc, url)}") from None
        return JournalStorage(JournalRedisBackend(url))
    raise AutopruneError(
        f"unsupported storage URL {redact(url)}: use sqlite:///FILE, postgresql://..., mysql://... "
        "or redis://... (no URL: a journal file in the run folder)"
    )


class FlockJournalLock(BaseJournalFileLock):
    """An exclusive ``flock`` on ``<journal>.flock``: released by the kernel when the holder
    exits, killed or not. Each acquisition opens its own descriptor, so threads exclude each
    other as processes do."""

    def __init__(self, journal: str | os.PathLike) -> None:
        self.path = f"{journal}{FLOCK_SUFFIX}"
        self._held = threading.local()

    def acquire(self) -> bool:
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self._held.fd = fd
        return True

    def release(self) -> None:
        import fcntl

        fd = self._held.fd
        self._held.fd = None
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


FLOCK_SUFFIX = ".flock"


def _journal_lock(path: Path) -> BaseJournalFileLock | None:
    """:class:`FlockJournalLock` where ``flock`` exists (POSIX), else Optuna's default."""
    try:
        import fcntl  # noqa: F401
    except ImportError:
        return None
    return FlockJournalLock(path)


_HIDDEN = "***"
# Query or keyword parameters that carry a secret (libpq's password and sslpassword among them).
_SECRET_KEYS = r"(?:ssl)?password|passwd|pwd|pass|secret|token|api[_-]?key"
_QUERY_SECRET = re.compile(rf"([?&;](?:{_SECRET_KEYS})=)([^&;#]*)", re.IGNORECASE)
_KEYWORD_SECRET = re.compile(rf"(\b(?:{_SECRET_KEYS})\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def redact(url: str) -> str:
    """``url`` with every password replaced by ``***``, for showing it to people.

    Covers ``scheme://user:password@host`` (an empty user too, as in ``redis://:pw@host``;
    percent-encoded or stray ``@``/``/`` characters in the password included), secrets in the
    query string (``?password=...``, ``sslpassword``, ``token``...), and libpq keyword strings
    (``host=h password=...``). A URL without a password comes back unchanged.
    """
    head, sep, rest = url.partition("://")
    if not sep:
        return _KEYWORD_SECRET.sub(lambda m: m.group(1) + _HIDDEN, url)
    query_at = rest.find("?")
    authority = rest if query_at < 0 else rest[:query_at]
    query = "" if query_at < 0 else rest[query_at:]
    at = authority.rfind("@")  # the last one: an unencoded '@' in the password stays hidden
    if at >= 0:
        userinfo, hostpath = authority[:at], authority[at + 1 :]
        if ":" in userinfo:
            authority = f"{userinfo.split(':', 1)[0]}:{_HIDDEN}@{hostpath}"
    query = _QUERY_SECRET.sub(lambda m: m.group(1) + _HIDDEN, query)
    return f"{head}{sep}{authority}{query}"


def _passwords(url: str) -> list[str]:
    """The passwords in ``url`` as written and decoded (to scrub them from driver messages)."""
    found = []
    _, sep, rest = url.partition("://")
    authority = rest.split("?", 1)[0]
    if sep and "@" in authority:
        userinfo = authority[: authority.rfind("@")]
        if ":" in userinfo:
            found.append(userinfo.split(":", 1)[1])
    found += [m.group(2) for m in _QUERY_SECRET.finditer(rest if sep else "")]
    found += [unquote(p) for p in found]
    return sorted({p for p in found if p}, key=len, reverse=True)


def _first_line(exc: Exception, url: str = "") -> str:
    text = str(exc)
    for password in _passwords(url):
        text = text.replace(password, _HIDDEN)
    lines = text.strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__


def studies_in(storage: BaseStorage) -> list[str]:
    return [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
