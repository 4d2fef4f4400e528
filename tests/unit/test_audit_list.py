"""`audit list` through the command line (SQLite): streaming, paging, and every filter's input."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import event

from orchestrator import Runtime, Settings
from orchestrator.audit import AuditEntry, AuditQuery, iter_audit, parse_timestamp, write_audit
from orchestrator.errors import InputError
from schemas import AuditType
from workers.cli import main

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
EVENT_A = "3f2a0c1e-0000-4000-8000-00000000000a"
EVENT_B = "3f2b9d4e-0000-4000-8000-00000000000b"
EVENT_C = "9c11d2f0-0000-4000-8000-00000000000c"


@pytest.fixture
def env(settings: Settings) -> dict[str, str]:
    """The CLI's settings, on the same SQLite database as the ``runtime`` fixture."""
    return {
        "LOGOUT_DATA_DIR": str(settings.data_dir),
        "LOGOUT_DATABASE_URL": settings.effective_database_url,
        "LOGOUT_BROKER_URL": "memory://",
        "LOGOUT_PROTOCOLS": "",
        "LOGOUT_LOG_LEVEL": "WARNING",
    }


def _list(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(main, ["audit", "list", *args], env=env)


def _lines(result: Result) -> list[dict[str, Any]]:
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def _write(runtime: Runtime, entries: Sequence[AuditEntry], at: datetime = T0) -> None:
    with runtime.database.begin() as db:
        write_audit(db, entries, at=at)


def _numbered(count: int, start: int = 0) -> list[AuditEntry]:
    """``count`` event.received records, session ``s-<n>`` each (to tell them apart)."""
    return [
        AuditEntry(
            key=f"n-{n}", type=AuditType.EVENT_RECEIVED, outcome="accepted", session_id=f"s-{n}"
        )
        for n in range(start, start + count)
    ]


@pytest.fixture
def many(runtime: Runtime) -> Runtime:
    """1,234 records: more than the table's default limit."""
    _write(runtime, _numbered(1234))
    return runtime


# -- all of them, or a page -----------------------------------------------------------------


def test_json_streams_every_record_past_a_thousand(many: Runtime, env: dict[str, str]) -> None:
    """--json writes all 1,234 records, oldest first, and nothing on stderr."""
    result = _list(env, "--json")
    records = _lines(result)
    assert [r["session_id"] for r in records] == [f"s-{n}" for n in range(1234)]
    assert result.stderr == ""


def test_stream_reads_keyset_pages(many: Runtime) -> None:
    """iter_audit reads one page of rows per statement, so memory does not grow with the trail."""
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(many.engine, "before_cursor_execute", count)
    try:
        with many.database() as db:
            seen = [r.session_id for r in iter_audit(db, AuditQuery(), page_size=500)]
    finally:
        event.remove(many.engine, "before_cursor_execute", count)
    assert seen == [f"s-{n}" for n in range(1234)]
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 3  # 500 + 500 + 234
    assert all("LIMIT" in s.upper() for s in selects)


def test_table_says_on_stderr_when_more_matched(many: Runtime, env: dict[str, str]) -> None:
    """The table keeps its default of 1,000 (the latest) and says how many matched."""
    result = _list(env)
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if "event.received" in line]
    assert len(rows) == 1000
    assert "s-1233" in rows[-1]
    assert "s-234" in rows[0]
    assert result.stderr.strip() == "showing the latest 1,000 of 1,234; use --limit or --json"
    everything = _list(env, "--limit", "2000")
    assert everything.stderr == ""


def test_json_with_a_limit_says_it_was_cut(many: Runtime, env: dict[str, str]) -> None:
    """--json --limit N gives the latest N and says on stderr that more matched."""
    result = _list(env, "--json", "--limit", "10")
    assert [r["session_id"] for r in _lines(result)] == [f"s-{n}" for n in range(1224, 1234)]
    assert "showing the latest 10 of 1,234" in result.stderr


def test_after_pages_forward_and_names_the_next_cursor(many: Runtime, env: dict[str, str]) -> None:
    """--after <id> --limit N: the N records after it, and stderr names where to go on."""
    everything = _lines(_list(env, "--json"))
    first = _list(env, "--json", "--after", everything[99]["id"], "--limit", "500")
    page = _lines(first)
    assert [r["session_id"] for r in page] == [f"s-{n}" for n in range(100, 600)]
    cursor = page[-1]["id"]
    assert first.stderr.strip() == (
        f"showing the first 500 of 1,134 after {everything[99]['id']}; "
        f"continue with --after {cursor}"
    )
    rest = _list(env, "--json", "--after", cursor)
    assert [r["session_id"] for r in _lines(rest)] == [f"s-{n}" for n in range(600, 1234)]
    assert rest.stderr == ""
    assert _lines(_list(env, "--json", "--after", everything[-1]["id"])) == []


def test_after_an_unknown_record_is_refused(runtime: Runtime, env: dict[str, str]) -> None:
    """--after names a record id; one that is not in the trail is a clear error."""
    _write(runtime, _numbered(3))
    result = _list(env, "--json", "--after", "not-a-record")
    assert result.exit_code == 2
    assert "Invalid value for '--after'" in result.stderr
    assert "no audit record has the id 'not-a-record'" in result.stderr
    assert "Traceback" not in result.output


# -- --event, --type, --user, --since --------------------------------------------------------


@pytest.fixture
def events(runtime: Runtime) -> Runtime:
    """Three events: bob's logout (with a duplicate), alice's, and one that was rejected."""
    received = AuditType.EVENT_RECEIVED
    _write(
        runtime,
        [
            AuditEntry("a-r", received, "accepted", event_id=EVENT_A, session_id="s-9"),
            AuditEntry(
                "a-e", AuditType.SESSION_ENDED, "ended", EVENT_A, user_id="bob", session_id="s-9"
            ),
            AuditEntry(
                "a-d", AuditType.DELIVERY_FAILED, "failed", EVENT_A, user_id="bob", provider="wiki"
            ),
            AuditEntry("a-dup", AuditType.EVENT_DUPLICATE, "ignored", EVENT_A, session_id="s-9"),
            AuditEntry("b-r", received, "accepted", event_id=EVENT_B, session_id="s-1"),
            AuditEntry(
                "b-e", AuditType.SESSION_ENDED, "ended", EVENT_B, user_id="alice", session_id="s-1"
            ),
            AuditEntry("c-x", AuditType.EVENT_REJECTED, "rejected", event_id=EVENT_C),
        ],
    )
    return runtime


def test_event_accepts_a_unique_prefix(events: Runtime, env: dict[str, str]) -> None:
    """The 8 characters the table shows (or fewer, any case) select the event."""
    for given in (EVENT_A[:8], "3F2A", EVENT_A):
        records = _lines(_list(env, "--json", "--event", given))
        assert [r["type"] for r in records] == [
            "event.received",
            "session.ended",
            "delivery.failed",
            "event.duplicate",
        ]
        assert {r["event_id"] for r in records} == {EVENT_A}


def test_event_prefix_that_is_ambiguous_or_unknown(events: Runtime, env: dict[str, str]) -> None:
    """Several events start so: each is listed; none: said so; both exit 2, no traceback."""
    ambiguous = _list(env, "--event", "3f2")
    assert ambiguous.exit_code == 2
    assert "Invalid value for '--event'" in ambiguous.stderr
    assert EVENT_A in ambiguous.stderr
    assert EVENT_B in ambiguous.stderr
    assert "give more characters" in ambiguous.stderr
    unknown = _list(env, "--event", "77")
    assert unknown.exit_code == 2
    assert "no audit record or event has an id starting with '77'" in unknown.stderr
    assert "Traceback" not in ambiguous.output + unknown.output


def test_unknown_type_lists_the_valid_ones(events: Runtime, env: dict[str, str]) -> None:
    """A typo in --type is refused with every valid type and family."""
    result = _list(env, "--type", "delivery.faild")
    assert result.exit_code == 2
    assert "Invalid value for '--type'" in result.stderr
    message = " ".join(result.stderr.split())
    for kind in AuditType:
        assert kind.value in message
    assert "delivery." in message
    assert "Traceback" not in result.output


def test_type_family_selects_its_types(events: Runtime, env: dict[str, str]) -> None:
    """--type event. gives event.received, .duplicate and .rejected; an exact type only itself."""
    family = _lines(_list(env, "--json", "--type", "event."))
    assert [r["type"] for r in family] == [
        "event.received",
        "event.duplicate",
        "event.received",
        "event.rejected",
    ]
    exact = _lines(_list(env, "--json", "--type", "session.ended"))
    assert {r["type"] for r in exact} == {"session.ended"}


def test_user_includes_the_received_and_duplicate_records_of_its_events(
    events: Runtime, env: dict[str, str]
) -> None:
    """bob's logout shows whole: event.received and event.duplicate have no user id of their own."""
    records = _lines(_list(env, "--json", "--user", "bob"))
    assert [(r["type"], r["user_id"]) for r in records] == [
        ("event.received", None),
        ("session.ended", "bob"),
        ("delivery.failed", "bob"),
        ("event.duplicate", None),
    ]
    alice = _lines(_list(env, "--json", "--user", "alice"))
    assert {r["event_id"] for r in alice} == {EVENT_B}


@pytest.fixture
def dated(runtime: Runtime) -> Runtime:
    """Three records, 1.5 s apart from 12:00:00 UTC."""
    for n in range(3):
        _write(runtime, _numbered(1, start=n), at=T0 + timedelta(seconds=1.5 * n))
    return runtime


def test_since_takes_every_timestamp_the_tool_prints(dated: Runtime, env: dict[str, str]) -> None:
    """JSON's `at`, its offset and fraction variants, the table's own format and a date."""
    printed = _lines(_list(env, "--json"))
    assert printed[1]["at"] == "2026-01-01T12:00:01.500000Z"
    cases = {
        printed[1]["at"]: ["s-1", "s-2"],  # as --json prints it
        "2026-01-01T12:00:01.5Z": ["s-1", "s-2"],
        "2026-01-01T13:00:01.500+01:00": ["s-1", "s-2"],
        "2026-01-01T12:00:01.500001+00:00": ["s-2"],
        "2026-01-01 12:00:01": ["s-1", "s-2"],  # the table's format (UTC)
        "2026-01-01T12:00:03": ["s-2"],
        "2026-01-01t12:00:03z": ["s-2"],
        "2026-01-01": ["s-0", "s-1", "s-2"],
        "2026-01-02": [],
    }
    for since, expected in cases.items():
        records = _lines(_list(env, "--json", "--since", since))
        assert [r["session_id"] for r in records] == expected, since
    table = _list(env)
    shown = next(line for line in table.stdout.splitlines() if "s-1" in line).split()
    table_since = _lines(_list(env, "--json", "--since", f"{shown[0]} {shown[1]}"))
    assert [r["session_id"] for r in table_since] == ["s-1", "s-2"]


def test_since_that_is_not_a_timestamp(dated: Runtime, env: dict[str, str]) -> None:
    """A bad --since names the option and shows the forms it takes."""
    result = _list(env, "--since", "yesterday")
    assert result.exit_code == 2
    assert "Invalid value for '--since'" in result.stderr
    assert "'yesterday' is not a timestamp" in result.stderr
    assert "Traceback" not in result.output
    with pytest.raises(InputError, match="since"):
        parse_timestamp("12/31/2025")


@pytest.mark.parametrize("text", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"])
def test_a_time_whose_utc_reading_is_out_of_range_is_refused(text: str) -> None:
    """Valid as written, but out of datetime's range in UTC: refused with the range, not an
    OverflowError when the database compares it."""
    with pytest.raises(InputError) as refused:
        parse_timestamp(text)
    assert refused.value.problems[0].message == (
        f"{text!r} is out of range: in UTC it falls outside "
        "0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z; give a time within it"
    )
    assert parse_timestamp("9999-12-31T23:59:59.999999Z").year == 9999
    assert parse_timestamp("0001-01-01").year == 1


def test_a_missing_database_file_is_named_not_created(env: dict[str, str], tmp_path: Path) -> None:
    """Reading never creates: a mistyped SQLite path is exit 7 naming it, and nothing is left
    behind (opening it would have made the file and its folders)."""
    missing = tmp_path / "typo" / "sub" / "logout.db"
    result = _list({**env, "LOGOUT_DATABASE_URL": f"sqlite:///{missing}"})
    assert result.exit_code == 7, result.output
    assert f"no database at {missing}" in result.output
    assert not (tmp_path / "typo").exists()


def test_an_event_whose_trail_was_purged_is_found_by_its_row(
    events: Runtime, env: dict[str, str]
) -> None:
    """`audit purge` removes records, not the events (nor their deliveries): `--event` still
    finds an event by its events row, and lists what the trail holds of it (nothing)."""
    from sqlalchemy import insert

    from orchestrator.audit_query import resolve_event_id
    from orchestrator.store.tables import EVENTS

    purged = "5e7a0000-0000-4000-8000-00000000000d"
    with events.database.begin() as db:
        db.execute(
            insert(EVENTS).values(
                event_id=purged, type="logout.user", message_id="m-purged", payload={}
            )
        )
    with events.database() as db:
        assert resolve_event_id(db, "5E7A") == purged
        assert resolve_event_id(db, "3f2a") == EVENT_A  # the trail's, as before
    assert _lines(_list(env, "--json", "--event", "5e7a")) == []
