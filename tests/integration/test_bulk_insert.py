"""`InsertIgnoring` on PostgreSQL (rows as one JSON array) and SQLite (a multi-row insert):
the same rows written, in order, conflicts ignored, and on PostgreSQL one statement text for
any number of rows."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    JSON,
    Column,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    event,
    select,
    text,
)

from orchestrator.store.core import UTCDateTime
from orchestrator.store.engine import make_engine
from orchestrator.store.sql import InsertIgnoring

pytestmark = pytest.mark.integration

METADATA = MetaData()
ITEMS = Table(
    "bulk_items",
    METADATA,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("key", String(64), nullable=False),
    Column("part", Integer, nullable=False),
    Column("at", UTCDateTime(), nullable=False),
    Column("note", String(64)),
    Column("detail", JSON, nullable=False),
    UniqueConstraint("key", "part"),
)
WITH_DEFAULT = Table(
    "bulk_defaults",
    METADATA,
    Column("key", String(64), primary_key=True),
    Column("status", String(16), default="pending"),
)
INSERT = InsertIgnoring(ITEMS, ("key", "part"), ("key", "part"))
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A database of each kind with the two tables above."""
    if request.param == "sqlite":
        made = _engine(f"sqlite:///{tmp_path / 'bulk.db'}")
    else:
        made = _engine(request.getfixturevalue("postgres_url"))
    try:
        yield made
    finally:
        made.dispose()


def _engine(url: str) -> Engine:
    made = make_engine(url)
    METADATA.create_all(made)
    return made


def _row(key: str, part: int, **detail: Any) -> dict[str, Any]:
    return {
        "key": key,
        "part": part,
        "at": T0 + timedelta(seconds=part),
        "note": None,
        "detail": {"zeta": 1, "alpha": [part, "é"], **detail},
    }


def test_rows_are_written_in_order_and_conflicts_ignored(engine: Engine) -> None:
    """Only the rows new to the table (and first in the batch) are written and returned."""
    with engine.begin() as conn:
        first = INSERT.execute(conn, [_row("a", 1), _row("a", 2)]).all()
        again = [_row("b", 3), _row("a", 1, changed=True), _row("c", 4), _row("b", 3, late=1)]
        second = INSERT.execute(conn, again).all()
    assert [tuple(r) for r in first] == [("a", 1), ("a", 2)]
    assert [tuple(r) for r in second] == [("b", 3), ("c", 4)]
    with engine.connect() as conn:
        stored = conn.execute(select(ITEMS).order_by(ITEMS.c.seq)).mappings().all()
    assert [(r["key"], r["part"]) for r in stored] == [("a", 1), ("a", 2), ("b", 3), ("c", 4)]
    assert [r["at"] for r in stored] == [T0 + timedelta(seconds=n) for n in (1, 2, 3, 4)]
    assert stored[0]["detail"] == {"zeta": 1, "alpha": [1, "é"]}  # not the changed copy
    assert stored[0]["note"] is None


def test_a_json_column_keeps_the_keys_in_the_order_written(engine: Engine) -> None:
    """``json``, not ``jsonb``, on PostgreSQL: the stored text keeps each object's keys in
    the order Python wrote them (its spacing is the writer's: orjson's on PostgreSQL)."""
    with engine.begin() as conn:
        INSERT.execute(conn, [_row("k", 1, middle={"y": 2, "x": 1})])
        stored = conn.scalar(select(text("CAST(detail AS TEXT)")).select_from(ITEMS))
    pairs = json.loads(stored, object_pairs_hook=list)
    assert pairs == [("zeta", 1), ("alpha", [1, "é"]), ("middle", [("y", 2), ("x", 1)])]


def test_values_orjson_refuses_are_stored_as_the_standard_library_writes_them(
    engine: Engine,
) -> None:
    """An integer past 64 bits and a key that is no text go in as before, exactly: the
    stored text is the standard library's."""
    row = _row("big", 1, big=2**70, keys={1: "one"})
    with engine.begin() as conn:
        INSERT.execute(conn, [row])
        stored = conn.scalar(select(ITEMS.c.detail))
        stored_text = conn.scalar(select(text("CAST(detail AS TEXT)")).select_from(ITEMS))
    assert stored == {"zeta": 1, "alpha": [1, "é"], "big": 2**70, "keys": {"1": "one"}}
    assert stored_text == json.dumps(row["detail"])


def test_timestamps_are_stored_as_the_instants_given(engine: Engine) -> None:
    """One timestamp shared by many rows (converted once) and the same instant given in
    another zone are stored alike; a different instant of the same wall-clock time is not."""
    east = timezone(timedelta(hours=2))
    rows = [{**_row("t", part), "at": T0} for part in range(3)]
    rows.append({**_row("t", 3), "at": T0.astimezone(east)})
    rows.append({**_row("t", 4), "at": T0.replace(tzinfo=east)})  # two hours earlier
    with engine.begin() as conn:
        INSERT.execute(conn, rows)
        stored = conn.execute(select(ITEMS.c.at).order_by(ITEMS.c.part)).scalars().all()
    assert stored == [T0, T0, T0, T0, T0 - timedelta(hours=2)]


def test_a_naive_timestamp_is_refused(engine: Engine) -> None:
    """As :class:`UTCDateTime` refuses it: nothing written."""
    row = {**_row("n", 1), "at": datetime(2026, 1, 1, 12, 0)}
    with pytest.raises(Exception, match="naive datetime"), engine.begin() as conn:
        INSERT.execute(conn, [row])
    with engine.connect() as conn:
        assert conn.execute(select(ITEMS)).all() == []


def test_one_statement_text_for_any_number_of_rows(postgres_url: str) -> None:
    """On PostgreSQL psycopg parses (and the server prepares) the insert once."""
    made = _engine(postgres_url)
    seen: set[str] = set()
    event.listen(made, "before_cursor_execute", lambda *a: seen.add(a[2]))
    try:
        with made.begin() as conn:
            for count in (1, 3, 40):
                rows = [_row(f"r{count}", part) for part in range(count)]
                assert len(INSERT.execute(conn, rows).all()) == count
    finally:
        made.dispose()
    assert len([statement for statement in seen if "bulk_items" in statement]) == 1


def test_a_column_with_a_python_default_must_be_given(engine: Engine) -> None:
    """PostgreSQL's server would not fill in a default only SQLAlchemy knows: refused, not
    NULL; and refused on SQLite too, where SQLAlchemy would fill it in, so that what passes
    there passes on PostgreSQL. Nothing is written."""
    insert = InsertIgnoring(WITH_DEFAULT, ("key",))
    refused = pytest.raises(ValueError, match=r"rows of bulk_defaults must give \['status'\]")
    with refused, engine.begin() as conn:
        insert.execute(conn, [{"key": "k"}])
    with engine.begin() as conn:
        assert conn.execute(select(WITH_DEFAULT)).all() == []
        insert.execute(conn, [{"key": "k", "status": "done"}])
        assert conn.execute(select(WITH_DEFAULT)).all() == [("k", "done")]
