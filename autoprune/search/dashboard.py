"""optuna-dashboard on a run's storage, with its artifact store (per-trial charts)."""

from __future__ import annotations

from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from autoprune.errors import AutopruneError
from autoprune.search.storage import JOURNAL_NAME, open_storage


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        """Requests are not logged: the library does not print."""


def dashboard_server(
    run_dir: Path, storage_url: str | None = None, host: str = "127.0.0.1", port: int = 8080
) -> tuple[WSGIServer, str]:
    """Bind optuna-dashboard to ``host:port`` (0 picks a free port); returns the server and its URL.

    Call ``serve_forever()`` on the server to serve; it binds to loopback unless told otherwise.
    """
    from optuna_dashboard import wsgi

    if not run_dir.is_dir():
        raise AutopruneError(f"run folder {str(run_dir)!r} does not exist")
    if storage_url is None and not (run_dir / JOURNAL_NAME).is_file():
        raise AutopruneError(f"no study in {run_dir}: expected {JOURNAL_NAME} there (or pass --storage URL)")
    opened = open_storage(run_dir, storage_url)
    app = wsgi(opened.storage, artifact_store=opened.artifacts)
    try:
        server = make_server(host, port, app, handler_class=_QuietHandler)
    except OSError as exc:
        raise AutopruneError(f"cannot listen on {host}:{port}: {exc.strerror}; try --port 0") from None
    bound_host, bound_port = server.server_address[:2]
    return server, f"http://{bound_host}:{bound_port}/dashboard/"
