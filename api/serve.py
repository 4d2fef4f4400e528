"""``logout-orchestrator serve``: the service under uvicorn, ``api_workers`` processes on
``api_host``:``api_port``. Stateless: run as many copies as needed behind a load balancer."""

from __future__ import annotations

import json
import os
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import structlog

from orchestrator.listening import listening_socket
from orchestrator.metrics import multiprocess_dir
from orchestrator.settings import Settings

__all__ = ["serve", "settings_file"]

_log = structlog.get_logger("logout.api")


def serve(settings: Settings) -> int:
    """Serve until SIGTERM/SIGINT; the settings are read once, by the caller."""
    import uvicorn

    from api.app import create_app

    if not settings.api_tokens:
        _log.warning(
            "api_tokens is empty: every endpoint but /healthz, /readyz (and /metrics when "
            "metrics_public) answers 401; add a token's hash (logout-orchestrator api token)"
        )
    common = {
        "host": settings.api_host,
        "port": settings.api_port,
        "access_log": False,  # paths hold session ids; the metrics count requests instead
        "log_config": None,  # our structlog set-up (configure_logging) stays in force
        "server_header": False,
        "proxy_headers": False,
    }
    # Bound here, before the database is reached: a port in use or a host that is no
    # address of this machine is a configuration error naming the setting (exit 6), not
    # uvicorn's bare "[Errno 98]" line and its start-up failure status.
    origins = (settings.origin("api_host"), settings.origin("api_port"))
    with listening_socket(settings.api_host, settings.api_port, origins) as sock:
        if settings.api_workers == 1:
            server = uvicorn.Server(uvicorn.Config(create_app(settings), **common))  # type: ignore[arg-type]
            server.run(sockets=[sock])
            return 0 if server.started else 1
        return _serve_processes(settings, sock, common)


def _serve_processes(settings: Settings, sock: socket.socket, common: dict[str, Any]) -> int:
    """``api_workers`` processes sharing ``sock``, supervised by uvicorn."""
    import uvicorn

    from api.app import SETTINGS_VARIABLE
    from orchestrator.runtime import Runtime

    # Reach the database and migrate once here, so a database that is down is one clear
    # error (not one per process, restarted), and the processes do not race to migrate.
    Runtime.start(settings, handlers={}).close()
    # The workers count in the folder's files; /metrics sums them.
    with multiprocess_dir() as folder, settings_file(settings, folder) as path:
        os.environ[SETTINGS_VARIABLE] = path
        try:
            # uvicorn's public entry point, on the socket bound already (``fd``): its
            # supervisor's own constructor differs between uvicorn's versions.
            uvicorn.run(
                "api.app:from_environment",
                factory=True,
                workers=settings.api_workers,
                fd=sock.fileno(),
                **common,
            )
        finally:
            os.environ.pop(SETTINGS_VARIABLE, None)
    return 0


@contextmanager
def settings_file(settings: Settings, folder: str) -> Iterator[str]:
    """A file in ``folder`` holding ``settings`` for the worker processes
    (:meth:`Settings.for_child`), readable by this user alone (0600), removed afterwards:
    the settings hold passwords, which the processes' environment must not."""
    descriptor, path = tempfile.mkstemp(prefix="serve-settings-", suffix=".json", dir=folder)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            json.dump(settings.for_child(), file, default=str)  # "given": only its keys count
        yield path
    finally:
        with suppress(FileNotFoundError):
            os.unlink(path)
