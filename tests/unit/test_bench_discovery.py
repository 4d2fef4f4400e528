"""The discovery benchmark's pure parts: statement labels, plan checks, sizes, summaries."""

from __future__ import annotations

import re
from typing import Any

import pytest

from bench.discovery import (
    LINK_IDENTIFIERS,
    LINK_ROWS,
    LINKS_PER_SESSION,
    open_sessions,
    plan_uses_index,
    ratios,
    sessions_for,
    statement_label,
    summary,
)
from orchestrator.store import ProviderSession
from protocols.oidc import OidcIdentifiers


@pytest.mark.parametrize(
    ("sql", "label"),
    [
        (
            "UPDATE provider_sessions SET ended_at=%(b_now)s WHERE provider_sessions.session_id"
            " = %(b_session)s AND provider_sessions.ended_at IS NULL",
            "UPDATE provider_sessions",
        ),
        (
            "SELECT provider_sessions.id AS ps_id, idp_sessions.user_id \nFROM provider_sessions"
            " JOIN providers ON providers.name = provider_sessions.provider",
            "SELECT provider_sessions",
        ),
        (
            "SELECT deliveries.id FROM deliveries JOIN provider_sessions ON x = y",
            "SELECT deliveries",
        ),
        ("INSERT INTO audit_records (id) VALUES (%(id)s)", "INSERT audit_records"),
        ("select 1", "SELECT ?"),
    ],
)
def test_a_statement_is_labelled_by_its_verb_and_first_table(sql: str, label: str) -> None:
    """Only statements that read or change provider_sessions first are labelled with it."""
    assert statement_label(sql) == label


def test_a_plan_must_read_the_table_through_an_index() -> None:
    """Index scans and bitmap heap scans pass; a sequential scan of the table fails."""
    index = ["Update on provider_sessions", "->  Index Scan using ix_a on provider_sessions"]
    bitmap = [
        "Sort",
        "->  Bitmap Heap Scan on provider_sessions",
        "->  Bitmap Index Scan on ix_b",
        "->  Seq Scan on providers",
    ]
    assert plan_uses_index(index, "provider_sessions")
    assert plan_uses_index(bitmap, "provider_sessions")
    assert not plan_uses_index(["Seq Scan on provider_sessions"], "provider_sessions")
    assert not plan_uses_index(
        ["Index Scan using ix_a on provider_sessions_x"], "provider_sessions"
    )
    assert not plan_uses_index(
        [*index, "->  Seq Scan on provider_sessions  (cost=0.00..1.00)"], "provider_sessions"
    )


def test_sessions_cover_the_provider_sessions_asked_for() -> None:
    """1 to 7 provider sessions per IdP session, 4 on average, and 3 sessions in 4 open."""
    assert LINKS_PER_SESSION == 4
    assert sessions_for(10_000) == 2507
    assert sum(1 + (g * 7919) % 7 for g in range(1, sessions_for(10_000) + 1)) >= 10_000
    assert open_sessions(10_000) == 2507 - 626


def test_summary_and_ratios() -> None:
    """Nearest-rank p50 and p99 in milliseconds; the ratio is the large p99 over the small."""
    seconds = [n / 1000 for n in range(100, 0, -1)]  # 1 .. 100 ms, unsorted
    assert summary(seconds) == {"p50_ms": 50.0, "p99_ms": 99.0, "runs": 100}
    small: dict[str, Any] = {
        "discovery": {"p99_ms": 2.0},
        "handle": {"p99_ms": 10.0},
        "statements": {"UPDATE provider_sessions": {"p99_ms": 1.0}},
    }
    large: dict[str, Any] = {
        "discovery": {"p99_ms": 3.0},
        "handle": {"p99_ms": 20.0},
        "statements": {"UPDATE provider_sessions": {"p99_ms": 1.5}},
    }
    assert ratios(small, large) == {
        "discovery": 1.5,
        "handle": 2.0,
        "UPDATE provider_sessions": 1.5,
    }


def test_provider_sessions_are_seeded_as_the_engine_reads_them() -> None:
    """The loader writes only columns the model has, the identifiers among them (not the
    sid/sub columns migration 0008 removed), as an object of the OIDC handler's fields."""
    inserted = re.search(r"INSERT INTO provider_sessions \(([^)]*)\)", LINK_ROWS.text)
    assert inserted is not None
    columns = {name.strip() for name in inserted.group(1).split(",")}
    assert "identifiers" in columns
    assert columns <= set(ProviderSession.__table__.columns.keys())
    assert LINK_IDENTIFIERS in LINK_ROWS.text
    assert LINK_IDENTIFIERS.startswith("json_build_object(")
    keys = re.findall(r"'(\w+)', ", LINK_IDENTIFIERS)
    assert keys == ["sid", "sub"]
    OidcIdentifiers.model_validate(dict.fromkeys(keys, "x"))
