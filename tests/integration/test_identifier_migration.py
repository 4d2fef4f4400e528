"""Migration 0008: provider-session identifiers move into one JSON column and back, on
SQLite and PostgreSQL, losslessly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy import text

from orchestrator.errors import InputError
from orchestrator.store.engine import make_engine
from orchestrator.store.migrate import alembic_config, head_revisions, upgrade

BEFORE = "0007_event_leases"
#: This migration; later ones (0009 ...) are not what these tests are about.
AFTER = "0008_session_identifiers"
AT = "2026-11-01 00:00:00"
COLUMNS = (
    "sid",
    "sub",
    "name_id",
    "name_id_format",
    "name_qualifier",
    "sp_name_qualifier",
    "session_index",
)
LISTED = ", ".join(COLUMNS)
ROWS: list[dict[str, Any]] = [
    {"session_id": "s-1", "provider": "wiki", "sid": "sid-1", "sub": "alice"},
    {"session_id": "s-1", "provider": "hr", "sub": "alice"},
    {
        "session_id": "s-1",
        "provider": "payroll",
        "name_id": "alice@example.com " + "x" * 1500,  # name_id is TEXT: longer than 1024
        "name_id_format": "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress",
        "name_qualifier": "https://idp.example",
        "sp_name_qualifier": "https://payroll.example",
        "session_index": "_idx-1",
    },
    {"session_id": "s-2", "provider": "wiki"},  # no identifier at all
]


def _seed(connection: Any) -> None:
    for session_id in ("s-1", "s-2"):
        connection.execute(
            text(
                "INSERT INTO idp_sessions (session_id, user_id, created_at, last_seen, "
                "remember_me, stay_signed_in, network_binding, geoip_binding) VALUES "
                "(:sid, 'u', :at, :at, false, false, 'no_binding', 'no_binding')"
            ),
            {"sid": session_id, "at": AT},
        )
    for name, protocol in (("wiki", "oidc"), ("hr", "oidc"), ("payroll", "saml")):
        connection.execute(
            text(
                "INSERT INTO providers (name, protocol, enabled, full_logout_on_rp_initiated, "
                "settings, updated_at) VALUES (:name, :protocol, true, false, '{}', :at)"
            ),
            {"name": name, "protocol": protocol, "at": AT},
        )
    for row in ROWS:
        values = {name: row.get(name) for name in COLUMNS}
        connection.execute(
            text(
                "INSERT INTO provider_sessions (session_id, provider, created_at, "
                f"{', '.join(COLUMNS)}) VALUES (:session_id, :provider, :at, "
                f"{', '.join(':' + name for name in COLUMNS)})"
            ),
            {"session_id": row["session_id"], "provider": row["provider"], "at": AT, **values},
        )


def _expected_identifiers() -> dict[tuple[str, str], dict[str, str]]:
    return {
        (row["session_id"], row["provider"]): {n: row[n] for n in COLUMNS if n in row}
        for row in ROWS
    }


_IDS = sa.column("identifiers", sa.JSON())
_PROVIDER_SESSIONS = sa.table(
    "provider_sessions",
    sa.column("session_id"),
    sa.column("provider"),
    sa.column("created_at"),
    _IDS,
)


def _url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'ids.db'}"
    return str(request.getfixturevalue("postgres_url"))


def _identifiers(connection: Any) -> dict[tuple[str, str], Any]:
    rows = connection.execute(
        sa.select(_PROVIDER_SESSIONS.c.session_id, _PROVIDER_SESSIONS.c.provider, _IDS)
    )
    return {(row.session_id, row.provider): row.identifiers for row in rows}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_identifiers_move_into_json_and_back_losslessly(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Rows written at 0007 upgrade to one identifiers object holding exactly the columns
    that had a value; the downgrade restores every column, None where there was none."""
    engine = make_engine(_url(backend, tmp_path, request))
    try:
        upgrade(engine, BEFORE)
        with engine.begin() as connection:
            _seed(connection)
        upgrade(engine, AFTER)
        with engine.connect() as connection:
            moved = {
                (row.session_id, row.provider): row.identifiers
                for row in connection.execute(
                    text("SELECT session_id, provider, identifiers FROM provider_sessions")
                )
            }
            if backend == "sqlite":  # SQLite hands JSON back as text
                moved = {key: json.loads(value) for key, value in moved.items()}
        assert moved == _expected_identifiers()
        with engine.connect() as connection:
            command.downgrade(alembic_config(connection), BEFORE)
            connection.commit()
        with engine.connect() as connection:
            restored = {
                (row.session_id, row.provider): {name: getattr(row, name) for name in COLUMNS}
                for row in connection.execute(
                    text(
                        f"SELECT session_id, provider, {', '.join(COLUMNS)} FROM provider_sessions"
                    )
                )
            }
        assert restored == {
            (row["session_id"], row["provider"]): {name: row.get(name) for name in COLUMNS}
            for row in ROWS
        }
    finally:
        engine.dispose()


def _tables(connection: Any) -> set[str]:
    return set(sa.inspect(connection).get_table_names())


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_downgrade_through_later_revisions_keeps_the_provider_sessions(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Dropping a column of ``idp_sessions`` (0009's downgrade) copies the table on SQLite;
    with foreign keys on, dropping the old copy deleted every provider session through
    ``ON DELETE CASCADE``. Migrations run with them off: the rows survive, on both."""
    engine = make_engine(_url(backend, tmp_path, request))
    try:
        upgrade(engine, BEFORE)
        with engine.begin() as connection:
            _seed(connection)
        upgrade(engine)
        with engine.connect() as connection:
            command.downgrade(alembic_config(connection), AFTER)
            connection.commit()
        with engine.connect() as connection:
            moved = _identifiers(connection)
            if backend == "sqlite":  # the foreign keys are on again
                assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1
        assert moved == _expected_identifiers()
    finally:
        engine.dispose()


@pytest.mark.parametrize("start", ["this", "head"])
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_downgrade_refuses_identifiers_the_old_columns_cannot_keep(
    backend: str, start: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A third handler's identifier (a CAS ticket) or a qualifier over 255 characters makes
    the downgrade refuse with counts, before it changes anything: every row stays as it was.
    From the head, the later revisions' downgrades that ran first are undone with it: the
    whole run is one transaction on both backends (PostgreSQL's DDL is transactional; on
    SQLite the migration environment begins one itself)."""
    engine = make_engine(_url(backend, tmp_path, request))
    try:
        upgrade(engine, BEFORE)
        with engine.begin() as connection:
            _seed(connection)
        upgrade(engine, AFTER if start == "this" else "head")
        [version_before] = [AFTER] if start == "this" else sorted(head_revisions())
        unkept = [
            ("s-2", "hr", {"ticket": "ST-1"}),
            ("s-2", "payroll", {"name_id": "bob", "sp_name_qualifier": "q" * 300}),
            ("s-3", "hr", {"ticket": "ST-2", "name_qualifier": "q" * 1024}),
        ]
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO idp_sessions (session_id, user_id, created_at, last_seen, "
                    "remember_me, stay_signed_in, network_binding, geoip_binding) VALUES "
                    "('s-3', 'u', :at, :at, false, false, 'no_binding', 'no_binding')"
                ),
                {"at": AT},
            )
            connection.execute(
                _PROVIDER_SESSIONS.insert(),
                [
                    {"session_id": sid, "provider": name, "created_at": AT, "identifiers": ids}
                    for sid, name, ids in unkept
                ],
            )
            before = _identifiers(connection)
            tables = _tables(connection)
        with engine.connect() as connection, pytest.raises(InputError) as refused:
            command.downgrade(alembic_config(connection), BEFORE)
        assert str(refused.value) == (
            "3 provider sessions hold identifiers the old columns cannot keep: ticket (2), "
            "values over 255 characters (2); remove those provider sessions (or their "
            "providers) first, then downgrade again (nothing was changed)"
        )
        with engine.connect() as connection:
            assert _identifiers(connection) == before
            version = connection.execute(text("SELECT version_num FROM alembic_version"))
            assert version.scalar_one() == version_before
            assert _tables(connection) == tables
    finally:
        engine.dispose()
