"""The Alembic migrations build exactly the schema the models describe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from orchestrator.logging import configure_logging
from orchestrator.store import Base
from orchestrator.store.engine import make_engine
from orchestrator.store.migrate import head_revisions, upgrade


def test_migrated_sqlite_schema_matches_the_models(tmp_path: Path) -> None:
    """After `db upgrade`, autogenerate finds nothing to add, drop or change."""
    url = f"sqlite:///{tmp_path / 'schema.db'}"
    engine = make_engine(url)
    try:
        upgrade(engine)
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"compare_type": True, "render_as_batch": True}
            )
            differences = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert differences == []


def test_upgrade_to_the_outbox_unclaims_expiries_nothing_would_publish(tmp_path: Path) -> None:
    """A session claimed for expiry before the outbox (0004) but still open is unclaimed by
    0005, so the next sweep claims it into the outbox; an ended one keeps its claim."""
    engine = make_engine(f"sqlite:///{tmp_path / 'upgrade.db'}")
    claimed = "2026-11-01 00:00:00.000000"
    try:
        upgrade(engine, "0004")
        with engine.begin() as connection:
            for session_id, ended in (("open", None), ("ended", claimed)):
                connection.execute(
                    text(
                        "INSERT INTO idp_sessions (session_id, user_id, created_at, last_seen, "
                        "remember_me, stay_signed_in, network_binding, geoip_binding, "
                        "expiry_claimed_at, ended_at) VALUES (:sid, 'u', :at, :at, 0, 0, "
                        "'no_binding', 'no_binding', :at, :ended)"
                    ),
                    {"sid": session_id, "at": claimed, "ended": ended},
                )
        upgrade(engine)
        with engine.connect() as connection:
            rows: dict[str, object] = {
                row.session_id: row.expiry_claimed_at
                for row in connection.execute(
                    text("SELECT session_id, expiry_claimed_at FROM idp_sessions")
                )
            }
    finally:
        engine.dispose()
    assert rows["open"] is None
    assert rows["ended"] is not None


def test_upgrade_says_one_line_and_nothing_when_current(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A writing command migrates without Alembic's lines: one line of ours when something was
    applied, nothing (and Alembic not even asked) when the schema is current."""
    configure_logging("INFO", "json")
    engine = make_engine(f"sqlite:///{tmp_path / 'quiet.db'}")
    try:
        upgrade(engine)
        first = capsys.readouterr().err
        upgrade(engine)
        second = capsys.readouterr().err
    finally:
        engine.dispose()
    lines = [json.loads(line) for line in first.splitlines()]
    assert [line["event"] for line in lines] == ["database schema upgraded"]
    assert (lines[0]["before"], lines[0]["after"]) == ("none", max(head_revisions()))
    assert second == ""
