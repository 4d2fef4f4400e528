"""Migration 0011: the provider_subscriptions table comes and goes, on SQLite and
PostgreSQL; a subscription of a deleted provider goes with it; a provider has one row per
user and one every-user row (the partial unique index), which subscribe() ignores."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy import text
from sqlalchemy.orm import Session

from orchestrator.store import utcnow
from orchestrator.store.engine import make_engine
from orchestrator.store.migrate import alembic_config, upgrade
from orchestrator.subscriptions import EVERY_USER, subscribe

from .test_identifier_migration import _url

BEFORE = "0010_audit_chain"
AT = "2026-11-29 00:00:00"


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_subscriptions_table_upgrades_and_downgrades(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    engine = make_engine(_url(backend, tmp_path, request))
    try:
        upgrade(engine, BEFORE)
        assert "provider_subscriptions" not in sa.inspect(engine).get_table_names()
        upgrade(engine)
        with engine.begin() as connection:
            if backend == "sqlite":
                connection.execute(text("PRAGMA foreign_keys = ON"))
            connection.execute(
                text(
                    "INSERT INTO providers (name, protocol, enabled, "
                    "full_logout_on_rp_initiated, settings, updated_at) "
                    "VALUES ('gw', 'ssf', true, false, '{}', :at)"
                ),
                {"at": AT},
            )
            connection.execute(
                text(
                    "INSERT INTO provider_subscriptions (provider, user_id, created_at) "
                    "VALUES ('gw', 'alice', :at), ('gw', NULL, :at)"
                ),
                {"at": AT},
            )
            with pytest.raises(sa.exc.IntegrityError), connection.begin_nested():
                connection.execute(
                    text(
                        "INSERT INTO provider_subscriptions (provider, user_id, created_at) "
                        "VALUES ('gw', 'alice', :at)"
                    ),
                    {"at": AT},
                )
            with pytest.raises(sa.exc.IntegrityError), connection.begin_nested():
                connection.execute(
                    text(
                        "INSERT INTO provider_subscriptions (provider, user_id, created_at) "
                        "VALUES ('gw', NULL, :at)"
                    ),
                    {"at": AT},
                )
            with Session(connection) as db:
                assert not subscribe(db, "gw", EVERY_USER, utcnow())
                assert not subscribe(db, "gw", "alice", utcnow())
                assert subscribe(db, "gw", "bob", utcnow())
            connection.execute(text("DELETE FROM providers WHERE name = 'gw'"))
            left = connection.scalar(text("SELECT count(*) FROM provider_subscriptions"))
        assert left == 0
        with engine.connect() as connection:
            command.downgrade(alembic_config(connection), BEFORE)
            connection.commit()
        assert "provider_subscriptions" not in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()
