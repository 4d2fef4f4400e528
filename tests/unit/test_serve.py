"""``serve --workers N``: the parent migrates once and hands the processes their settings in
a file only this user can read, never in their environment; the processes do not migrate."""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect
from starlette.testclient import TestClient

from api.app import SETTINGS_VARIABLE, from_environment
from api.serve import serve, settings_file
from orchestrator.settings import Settings

SECRET = "s3cret-in-the-url"


def _settings(tmp_path: Path, database: str, **values: Any) -> Settings:
    return Settings.load(
        None,
        data_dir=tmp_path,
        database_url=f"sqlite:///{tmp_path / database}",
        broker_url=f"redis://:{SECRET}@127.0.0.1:6379/7",
        protocols=[],
        log_level="WARNING",
        **values,
    )


def test_the_processes_get_their_settings_from_a_private_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While uvicorn runs the processes, their environment holds the file's path and no
    password; the file is 0600 and rebuilds the same settings; it is gone afterwards."""
    with socket.socket() as free:  # a port nothing listens on: serve binds it
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    settings = _settings(tmp_path, "parent.db", api_workers=2, api_host="127.0.0.1", api_port=port)
    seen: dict[str, Any] = {}

    def run(app: str, **options: Any) -> None:  # uvicorn.run, on the socket serve bound
        path = Path(os.environ[SETTINGS_VARIABLE])
        with socket.socket(fileno=os.dup(options["fd"])) as bound:
            address = bound.getsockname()
        seen.update(
            app=app,
            workers=options["workers"],
            environment=dict(os.environ),
            path=path,
            mode=stat.S_IMODE(path.stat().st_mode),
            data=json.loads(path.read_text(encoding="utf-8")),
            bound=address,
        )

    monkeypatch.setattr("uvicorn.run", run)
    assert serve(settings) == 0
    assert (seen["app"], seen["workers"]) == ("api.app:from_environment", 2)
    assert seen["bound"] == (settings.api_host, settings.api_port)
    assert not any(SECRET in value for value in seen["environment"].values())
    assert seen["mode"] == 0o600
    assert Settings.from_parent(seen["data"]).broker_url == settings.broker_url
    assert not seen["path"].exists()
    assert SETTINGS_VARIABLE not in os.environ


def test_a_worker_process_does_not_migrate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The app of a serve process, on a database nobody migrated and auto_migrate on,
    leaves it unmigrated (the parent migrates, once)."""
    settings = _settings(tmp_path, "child.db", auto_migrate=True)
    with settings_file(settings, str(tmp_path)) as path:
        monkeypatch.setenv(SETTINGS_VARIABLE, path)
        with TestClient(from_environment()) as client:
            assert client.get("/healthz").status_code == 200
    engine = create_engine(f"sqlite:///{tmp_path / 'child.db'}")
    try:
        assert "alembic_version" not in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_a_port_in_use_or_a_host_not_of_this_machine_names_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """serve binds before anything else: a port in use, or a host that is no address here,
    is a ConfigurationError (exit 6) naming api_port / api_host and its source."""
    from schemas.errors import ConfigurationError
    from workers.exit_codes import ExitCode, exit_code_for

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setenv("LOGOUT_API_PORT", str(port))
        settings = _settings(tmp_path, "db.sqlite", api_host="127.0.0.1")
        with pytest.raises(ConfigurationError) as in_use:
            serve(settings)
    assert "port is in use (LOGOUT_API_PORT (environment))" in str(in_use.value)
    assert exit_code_for(in_use.value) is ExitCode.CONFIGURATION
    settings = _settings(tmp_path, "db.sqlite", api_host="999.999.1.1")
    with pytest.raises(ConfigurationError, match=r"'999\.999\.1\.1' is not an address.*api_host"):
        serve(settings)


def test_the_worker_metrics_listener_names_its_settings_too() -> None:
    """A metrics port in use, a metrics host that is no host: a ConfigurationError naming
    the settings the worker passes (metrics_host / metrics_port and their source)."""
    from orchestrator.metrics import serve_metrics
    from schemas.errors import ConfigurationError

    origins = ("LOGOUT_METRICS_HOST (environment)", "LOGOUT_METRICS_PORT (environment)")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigurationError, match=r"in use \(LOGOUT_METRICS_PORT"):
            serve_metrics("127.0.0.1", port, origins)
    with pytest.raises(ConfigurationError, match=r"'not a host!' is not an address"):
        serve_metrics("not a host!", port, origins)
