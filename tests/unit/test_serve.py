"""``serve --workers N``: the parent migrates once and hands the processes their settings in
a file only this user can read, never in their environment; the processes do not migrate."""

from __future__ import annotations

import json
import os
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
    settings = _settings(tmp_path, "parent.db", api_workers=2)
    seen: dict[str, Any] = {}

    def run(app: str, **options: Any) -> None:
        path = Path(os.environ[SETTINGS_VARIABLE])
        seen.update(
            app=app,
            workers=options["workers"],
            environment=dict(os.environ),
            path=path,
            mode=stat.S_IMODE(path.stat().st_mode),
            data=json.loads(path.read_text(encoding="utf-8")),
        )

    monkeypatch.setattr("uvicorn.run", run)
    assert serve(settings) == 0
    assert (seen["app"], seen["workers"]) == ("api.app:from_environment", 2)
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
