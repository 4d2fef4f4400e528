"""New row ids: time-ordered UUIDs (version 7), many at once."""

from __future__ import annotations

import time
import uuid

from orchestrator.store.ids import new_ids


def test_each_id_is_a_version_7_uuid_in_canonical_text() -> None:
    """Version 7, the RFC 4122 variant, canonical text; none repeats; every variant digit
    and every hex digit of the random part occur."""
    ids = new_ids(2000)
    assert len(ids) == len(set(ids)) == 2000
    for text in ids:
        parsed = uuid.UUID(text)
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == text
    assert {text[19] for text in ids} == set("89ab")
    assert {text[-1] for text in ids} == set("0123456789abcdef")


def test_an_id_starts_with_its_millisecond_so_later_ids_sort_after() -> None:
    """The first 48 bits are the Unix time in milliseconds: ids made later sort after."""
    before = time.time_ns() // 1_000_000
    (first,) = new_ids(1)
    after = time.time_ns() // 1_000_000
    assert before <= uuid.UUID(first).int >> 80 <= after
    time.sleep(0.002)
    assert all(later > first for later in new_ids(50))


def test_none_asked_none_given() -> None:
    assert new_ids(0) == []
    assert len(new_ids(1)) == 1
