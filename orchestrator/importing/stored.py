"""What an import reads before it writes: stored rows and providers, by key, in few queries."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Connection, String, any_, bindparam, select
from sqlalchemy.dialects.postgresql import ARRAY

from orchestrator.errors import InputError
from orchestrator.importing.columns import (
    LINK_COLUMNS,
    LINKS,
    PROVIDERS,
    SESSION_COLUMNS,
    SESSIONS,
)
from protocols import ProtocolHandler, ProviderInfo

__all__ = [
    "chunks",
    "existing_ids",
    "providers",
    "stored_links",
    "stored_sessions",
]

#: Keys per ``IN (...)`` list when reading what already exists (SQLite's parameter limit).
_KEYS_PER_QUERY = 900


def providers(
    conn: Connection, handlers: Mapping[str, ProtocolHandler], names: Collection[str]
) -> dict[str, ProviderInfo]:
    """The named providers, their settings as their handler parses them (None: refused)."""
    found: dict[str, ProviderInfo] = {}
    for where in _among(conn, PROVIDERS.c.name, names):
        for row in conn.execute(select(PROVIDERS).where(where)).mappings():
            handler = handlers.get(row["protocol"])
            settings: Any = row["settings"]
            if handler is not None:
                try:
                    settings = handler.stored_settings(row["name"], row["settings"])
                except InputError:
                    settings = None
            found[row["name"]] = ProviderInfo(
                name=row["name"],
                protocol=row["protocol"],
                enabled=row["enabled"],
                full_logout_on_rp_initiated=row["full_logout_on_rp_initiated"],
                settings=settings,
            )
    return found


def stored_sessions(conn: Connection, ids: Collection[str]) -> dict[str, dict[str, Any]]:
    """Stored IdP sessions among ``ids`` (locked on PostgreSQL until the commit)."""
    columns = [SESSIONS.c[name] for name in SESSION_COLUMNS]
    found: dict[str, dict[str, Any]] = {}
    for where in _among(conn, SESSIONS.c.session_id, ids):
        query = select(*columns).where(where).with_for_update()
        for row in conn.execute(query).all():
            found[row[0]] = dict(zip(SESSION_COLUMNS, row, strict=True))
    return found


def existing_ids(conn: Connection, ids: Collection[str]) -> set[str]:
    """The IdP sessions among ``ids`` that are stored."""
    found: set[str] = set()
    for where in _among(conn, SESSIONS.c.session_id, ids):
        found.update(conn.scalars(select(SESSIONS.c.session_id).where(where)))
    return found


def stored_links(
    conn: Connection, session_ids: Collection[str]
) -> dict[tuple[str, str], dict[str, Any]]:
    """The stored provider sessions of ``session_ids``, by (session, provider), locked."""
    columns = [LINKS.c[name] for name in LINK_COLUMNS]
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for where in _among(conn, LINKS.c.session_id, session_ids):
        query = select(*columns).where(where).with_for_update()
        for row in conn.execute(query).all():
            found[(row[0], row[1])] = dict(zip(LINK_COLUMNS, row, strict=True))
    return found


def _among(
    conn: Connection, key: ColumnElement[str], values: Collection[str]
) -> Iterable[ColumnElement[bool]]:
    """Conditions that together select the rows whose ``key`` is one of ``values``: one
    ``= ANY(array)`` on PostgreSQL, ``IN`` lists of :data:`_KEYS_PER_QUERY` elsewhere."""
    if not values:
        return
    if conn.dialect.name == "postgresql":
        yield key == any_(bindparam("keys", list(values), type_=ARRAY(String)))
        return
    for chunk in chunks(sorted(values), _KEYS_PER_QUERY):
        yield key.in_(chunk)


_T = TypeVar("_T")


def chunks(items: Sequence[_T], size: int) -> Iterable[Sequence[_T]]:
    """``items`` in slices of ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
