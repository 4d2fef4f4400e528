"""`audit list` on PostgreSQL: streaming past 1,000, paging, and the filters' SQL."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Connection, text
from sqlalchemy.orm import Session

from orchestrator import Runtime, Settings
from orchestrator.audit import AuditEntry, write_audit
from schemas import AuditType
from tests.cli_imports import NEVER_ON_READING_COMMANDS, command_modules, loaded_of
from tests.integration.support import cli_env
from workers.cli import main

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
EVENT_A = "3f2a0c1e-0000-4000-8000-00000000000a"
EVENT_B = "3f2b9d4e-0000-4000-8000-00000000000b"


@pytest.fixture
def trail(tmp_path: Path, postgres_url: str) -> dict[str, str]:
    """1,234 numbered records, then bob's and alice's events; the CLI's environment for them."""
    settings = Settings.load(
        None, data_dir=tmp_path, database_url=postgres_url, broker_url="memory://", protocols=[]
    )
    runtime = Runtime.start(settings, handlers={})
    received, ended = AuditType.EVENT_RECEIVED, AuditType.SESSION_ENDED
    try:
        with runtime.database.begin() as db:
            numbered = [
                AuditEntry(f"n-{n}", received, "accepted", session_id=f"s-{n}") for n in range(1234)
            ]
            write_audit(db, numbered, at=T0)
            events = [
                AuditEntry("a-r", received, "accepted", EVENT_A, session_id="s-9"),
                AuditEntry("a-e", ended, "ended", EVENT_A, user_id="bob", session_id="s-9"),
                AuditEntry("a-dup", AuditType.EVENT_DUPLICATE, "ignored", EVENT_A),
                AuditEntry("b-r", received, "accepted", EVENT_B, session_id="s-1"),
                AuditEntry("b-e", ended, "ended", EVENT_B, user_id="alice", session_id="s-1"),
            ]
            write_audit(db, events, at=T0 + timedelta(seconds=1.25))
    finally:
        runtime.close()
    return cli_env(tmp_path, postgres_url)


def _list(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(main, ["audit", "list", *args], env=env)


def _lines(result: Result) -> list[dict[str, Any]]:
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_audit_list_on_postgresql(trail: dict[str, str]) -> None:
    """Every record streamed, the table's cut said, paging, prefix, family, user and since."""
    everything = _lines(_list(trail, "--json"))
    assert len(everything) == 1239
    assert [r["session_id"] for r in everything[:1234]] == [f"s-{n}" for n in range(1234)]

    table = _list(trail)
    assert table.stderr.strip() == "showing the latest 1,000 of 1,239; use --limit or --json"

    page = _list(trail, "--json", "--after", everything[0]["id"], "--limit", "1000")
    assert [r["id"] for r in _lines(page)] == [r["id"] for r in everything[1:1001]]
    assert f"continue with --after {everything[1000]['id']}" in page.stderr

    prefixed = _lines(_list(trail, "--json", "--event", "3F2A0C1E"))
    assert [r["type"] for r in prefixed] == ["event.received", "session.ended", "event.duplicate"]
    ambiguous = _list(trail, "--event", "3f2")
    assert ambiguous.exit_code == 2
    assert EVENT_A in ambiguous.stderr
    assert EVENT_B in ambiguous.stderr

    bob = _lines(_list(trail, "--json", "--user", "bob"))
    assert [(r["type"], r["event_id"]) for r in bob] == [
        ("event.received", EVENT_A),
        ("session.ended", EVENT_A),
        ("event.duplicate", EVENT_A),
    ]
    family = _lines(_list(trail, "--json", "--type", "session."))
    assert [r["user_id"] for r in family] == ["bob", "alice"]
    since = _lines(_list(trail, "--json", "--since", everything[-1]["at"]))
    assert len(since) == 5
    assert everything[-1]["at"] == "2026-01-01T12:00:01.250000Z"
    assert len(_lines(_list(trail, "--json", "--since", "2026-01-01 12:00:01"))) == 5


def test_audit_list_on_postgresql_loads_core_only(trail: dict[str, str]) -> None:
    """On PostgreSQL too, audit list reads through SQLAlchemy Core and psycopg: no ORM,
    Alembic, structlog, rich or other stack (NEVER_ON_READING_COMMANDS)."""
    output, loaded = command_modules(["audit", "list", "--json", "--event", EVENT_A], trail)
    assert [json.loads(line)["event_id"] for line in output.splitlines()] == [EVENT_A] * 3
    assert "psycopg" in loaded
    assert loaded_of(loaded, NEVER_ON_READING_COMMANDS) == []


def _reader_waits(runtime: Runtime) -> bool:
    """Whether a reader is waiting for writers: another connection polls pg_locks for them."""
    with runtime.database() as db:
        waiting = db.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
                "AND query LIKE '%virtualtransaction = ANY%'"
            )
        )
    return bool(waiting)


def _in_thread(call: Callable[[], Result]) -> tuple[threading.Thread, list[Result]]:
    results: list[Result] = []
    thread = threading.Thread(target=lambda: results.append(call()))
    thread.start()
    return thread, results


@pytest.fixture
def started(tmp_path: Path, postgres_url: str) -> Iterator[Runtime]:
    """A runtime on an empty trail (migrated)."""
    settings = Settings.load(
        None, data_dir=tmp_path, database_url=postgres_url, broker_url="memory://", protocols=[]
    )
    runtime = Runtime.start(settings, handlers={})
    yield runtime
    runtime.close()


def _write(conn: Connection | Session, name: str) -> None:
    write_audit(conn, [AuditEntry(name, AuditType.EVENT_RECEIVED, "accepted", session_id=name)])


def test_after_never_skips_a_record_that_commits_late(
    tmp_path: Path, postgres_url: str, started: Runtime
) -> None:
    """A transaction holds a record (the lower seq) uncommitted while another writes one and
    commits (writers never wait for each other); `audit list --after` started meanwhile waits
    for the first to commit (polling, holding no lock), then lists both in seq order. Every
    record shows up in exactly one page: the late one is never skipped."""
    env = cli_env(tmp_path, postgres_url)
    with started.database.begin() as db:
        _write(db, "first")
    (first,) = _lines(_list(env, "--json"))

    late = started.engine.connect()
    late_tx = late.begin()
    _write(late, "late")

    def write_next() -> None:
        with started.engine.begin() as conn:
            _write(conn, "next")

    writer = threading.Thread(target=write_next)  # a higher seq, committed at once
    writer.start()
    writer.join(timeout=15)
    assert not writer.is_alive(), "a second writer waited for the first"

    reader, results = _in_thread(lambda: _list(env, "--json", "--after", first["id"]))
    deadline = time.monotonic() + 15
    while reader.is_alive() and not _reader_waits(started):
        assert time.monotonic() < deadline, "the reader neither waits nor ends"
        time.sleep(0.02)
    assert reader.is_alive(), "the reader listed past a transaction still writing"
    late_tx.commit()
    late.close()
    reader.join(timeout=30)
    assert not reader.is_alive()
    before = _lines(results[0])
    cursor = before[-1]["id"] if before else first["id"]
    after = _lines(_list(env, "--json", "--after", cursor))

    listed = [r["session_id"] for r in [*before, *after]]
    assert sorted(listed) == ["late", "next"], f"before: {before}, after: {after}"
    assert listed == ["late", "next"], "listed in seq order"
    assert [r["session_id"] for r in _lines(_list(env, "--json"))] == ["first", "late", "next"]


def test_a_writer_open_too_long_stops_the_listing_with_a_sentence(
    tmp_path: Path, postgres_url: str, started: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transaction holding an audit record uncommitted past the wait: `audit list` lists
    nothing, says why in one line, and exits 8; once it commits, the record is listed."""
    monkeypatch.setattr("orchestrator.audit_query.HORIZON_WAIT", 1)
    env = cli_env(tmp_path, postgres_url)
    with started.engine.connect() as held, held.begin():
        _write(held, "held")
        stuck = _list(env, "--json")
        assert stuck.exit_code == 8, stuck.output
        assert stuck.stdout == ""
        assert "writing audit records for over 1 s" in stuck.stderr
        assert "Traceback" not in stuck.output
    assert [r["session_id"] for r in _lines(_list(env, "--json"))] == ["held"]
