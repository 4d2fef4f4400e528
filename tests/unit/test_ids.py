"""New row ids: what ``str(uuid.uuid4())`` would write, many at once."""

from __future__ import annotations

import uuid

from orchestrator.store.ids import new_ids


def test_each_id_is_a_random_uuid_as_uuid4_writes_it() -> None:
    """Version 4, the RFC 4122 variant, canonical text; none repeats; every variant digit
    and every hex digit of the random part occur."""
    ids = new_ids(2000)
    assert len(ids) == len(set(ids)) == 2000
    for text in ids:
        parsed = uuid.UUID(text)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == text
    assert {text[19] for text in ids} == set("89ab")
    assert {text[0] for text in ids} == set("0123456789abcdef")


def test_none_asked_none_given() -> None:
    assert new_ids(0) == []
    assert len(new_ids(1)) == 1
