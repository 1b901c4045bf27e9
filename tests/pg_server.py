"""A real PostgreSQL server on loopback for the tests that need one (fixture ``postgres_url``).

The server binaries come from ``make postgres-server`` (Debian's ``postgresql`` package when
root, the ``pgserver`` wheel otherwise); ``AUTOPRUNE_PG_BIN`` may name their folder. One server
per test session: ``initdb`` in a temporary folder, started on a free 127.0.0.1 port (as the
``postgres`` system user when the tests run as root: the server refuses root), with a database
``autoprune`` owned by a user ``alice`` that logs in over TCP with a password only. With
CI=true a server that cannot be started fails the tests that need it; elsewhere they skip and
say why.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

USER = "alice"
DATABASE = "autoprune"
SERVER_USER = "postgres"  # the system user Debian's package creates; the server's superuser too


def find_pg_bin() -> Path | None:
    """The folder holding initdb, pg_ctl and postgres, or None."""
    candidates = []
    if os.environ.get("AUTOPRUNE_PG_BIN"):
        candidates.append(os.environ["AUTOPRUNE_PG_BIN"])
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version, reverse=True)
    with contextlib.suppress(ImportError):
        import pgserver  # the wheel a non-root `make postgres-server` installs

        candidates += [str(Path(pgserver.__file__).parent / "pginstall" / "bin")]
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(str(Path(initdb).resolve().parent))
    for folder in candidates:
        if all((Path(folder) / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return Path(folder)
    return None


def _version(folder: str) -> tuple[int, ...]:
    name = Path(folder).parent.name
    return tuple(int(p) for p in name.split(".") if p.isdigit())


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """One throwaway cluster: ``start()`` it, read ``url``, ``stop()`` it (removes its files)."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="autoprune-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "socket"
        self.log = self.root / "server.log"
        self.port = 0
        # ':', '@' and '/' make the URL form of the password percent-encoded, as users' often are.
        self.password = f"S3cret:{secrets.token_hex(6)}@/x"
        self.as_root = os.geteuid() == 0
        self.started = False

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{USER}:{quote(self.password, safe='')}@127.0.0.1:{self.port}/{DATABASE}"

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = [str(self.bin_dir / args[0]), *args[1:]]
        if self.as_root:
            cmd = _as_user(SERVER_USER, cmd)
        result = subprocess.run(
            cmd, cwd=self.root, capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed ({result.returncode}): {self._tail(result)}")
        return result

    def _tail(self, result: subprocess.CompletedProcess) -> str:
        text = (result.stderr or "") + (result.stdout or "")
        if self.log.is_file():
            text += "\n" + self.log.read_text(errors="replace")
        return " | ".join(text.strip().splitlines()[-8:])

    def start(self) -> None:
        self.socket_dir.mkdir()
        if self.as_root:
            try:
                entry = pwd.getpwnam(SERVER_USER)
            except KeyError:
                raise RuntimeError(
                    f"running as root and there is no {SERVER_USER!r} user to run the server as"
                ) from None
            for path in (self.root, self.socket_dir):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self._run(
            "initdb", "-D", str(self.data), "-U", SERVER_USER, "-E", "UTF8", "--no-locale",
            "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync",
        )  # fmt: skip
        options = " ".join(
            [
                "-c listen_addresses=127.0.0.1",
                f"-c unix_socket_directories={self.socket_dir}",
                "-c max_connections=60",
                "-c shared_buffers=16MB",
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
            ]
        )
        for attempt in range(3):  # another process may take the free port before the server does
            self.port = _free_port()
            try:
                self._run(
                    "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                    "-o", f"-p {self.port} {options}", "start",
                )  # fmt: skip
                break
            except RuntimeError:
                if attempt == 2:
                    raise
        self.started = True
        self._create_user_and_database()

    def _create_user_and_database(self) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(
            host=str(self.socket_dir), port=self.port, user=SERVER_USER, dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(USER), sql.Literal(self.password)
                )
            )
            create = sql.SQL("CREATE DATABASE {} OWNER {}")
            conn.execute(create.format(sql.Identifier(DATABASE), sql.Identifier(USER)))

    def stop(self) -> None:
        try:
            if self.started:
                self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")
        finally:
            self.started = False
            shutil.rmtree(self.root, ignore_errors=True)


def _as_user(user: str, cmd: list[str]) -> list[str]:
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", user, "--", *cmd]
    return ["su", "-s", "/bin/sh", user, "-c", " ".join(_shell_quote(c) for c in cmd)]


def _shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"PostgreSQL server needed in CI: {reason}", pytrace=False)
    pytest.skip(f"no PostgreSQL server ({reason}); `make postgres-server` installs one")


@contextlib.contextmanager
def running_server() -> Iterator[PostgresServer]:
    """A started server, stopped on exit; fails under CI=true when none can be started, else skips."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("the psycopg driver is not installed: pip install -e '.[dev]'")
    bin_dir = find_pg_bin()
    if bin_dir is None:
        _unavailable("no initdb/pg_ctl/postgres found under /usr/lib/postgresql/*/bin or $AUTOPRUNE_PG_BIN")
    server = PostgresServer(bin_dir)
    try:
        server.start()
    except Exception as exc:  # initdb, pg_ctl or the first connection: all mean "no server"
        server.stop()
        _unavailable(f"could not start it from {bin_dir}: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One server for the whole test session (see :func:`running_server`)."""
    with running_server() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """``postgresql+psycopg://alice:PASSWORD@127.0.0.1:PORT/autoprune`` of a live server."""
    return postgres_server.url
