"""Migration 0009: the remember-device columns of idp_sessions come and go on SQLite and
PostgreSQL; sessions recorded before keep null there, and keep every other value both ways."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy import text

from orchestrator.store.engine import make_engine
from orchestrator.store.migrate import alembic_config, upgrade

from .test_identifier_migration import _url

BEFORE = "0008_session_identifiers"
THIS = "0009_remember_device"
ADDED = {"device_hash", "known_device", "known_device_reason"}


def _columns(engine: sa.Engine) -> set[str]:
    return {column["name"] for column in sa.inspect(engine).get_columns("idp_sessions")}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_upgrade_adds_null_columns_and_downgrade_removes_them(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    engine = make_engine(_url(backend, tmp_path, request))
    try:
        upgrade(engine, BEFORE)
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO idp_sessions (session_id, user_id, created_at, last_seen, ip, "
                    "remember_me, stay_signed_in, network_binding, geoip_binding) VALUES "
                    "('s-1', 'alice', :at, :at, '81.2.69.142', true, false, 'no_binding', "
                    "'no_binding')"
                ),
                {"at": "2026-11-01 00:00:00"},
            )
        assert not ADDED & _columns(engine)
        upgrade(engine, THIS)
        assert _columns(engine) >= ADDED
        with engine.begin() as connection:
            before = connection.execute(
                text("SELECT device_hash, known_device, known_device_reason FROM idp_sessions")
            ).one()
            assert tuple(before) == (None, None, None)
            connection.execute(
                text(
                    "UPDATE idp_sessions SET device_hash = :hash, known_device = true, "
                    "known_device_reason = 'cookie'"
                ),
                {"hash": "0" * 64},
            )
        with engine.connect() as connection:
            command.downgrade(alembic_config(connection), BEFORE)
            connection.commit()
        assert not ADDED & _columns(engine)
        with engine.connect() as connection:
            kept = connection.execute(
                text("SELECT session_id, user_id, ip, remember_me FROM idp_sessions")
            ).one()
        assert (kept.session_id, kept.user_id, kept.ip, bool(kept.remember_me)) == (
            "s-1",
            "alice",
            "81.2.69.142",
            True,
        )
        upgrade(engine)  # and up again, to the head
        assert _columns(engine) >= ADDED
    finally:
        engine.dispose()
