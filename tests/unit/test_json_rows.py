"""`json_rows`: the engine's bulk rows as one JSON array, written by orjson, and by the
standard library where orjson refuses a value, so that every row reads back the same."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import pytest

from orchestrator.store.sql import json_rows

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def test_rows_read_back_as_written_with_timestamps_in_utc() -> None:
    east = timezone(timedelta(hours=2))
    rows = [
        {"id": "a", "at": T0, "n": 1, "ok": True, "x": None, "f": 0.1, "detail": {"é": ["ß", 2]}},
        {"id": "b", "at": T0.astimezone(east), "n": -(2**63), "ok": False, "x": None, "f": 1e-7},
    ]
    parsed = json.loads(json_rows(rows))
    assert [row["at"] for row in parsed] == ["2026-01-01T12:00:00+00:00"] * 2
    assert parsed[0] == {**rows[0], "at": "2026-01-01T12:00:00+00:00"}
    assert parsed[1] == {**rows[1], "at": "2026-01-01T12:00:00+00:00"}
    assert list(parsed[0]) == list(rows[0])  # keys in the order written


@pytest.mark.parametrize(
    "detail",
    [
        {"big": 2**70},  # past 64 bits
        {"1": "a", 2: "b"},  # a key that is no text
        {"text": "\ud800"},  # a lone surrogate
    ],
    ids=["big-integer", "integer-key", "lone-surrogate"],
)
def test_what_orjson_refuses_is_written_as_the_standard_library_writes_it(
    detail: dict[object, object],
) -> None:
    rows = [{"at": T0, "detail": detail}]
    expected = json.dumps([{"at": "2026-01-01T12:00:00+00:00", "detail": detail}])
    assert json_rows(rows) == expected


def test_a_naive_timestamp_is_refused() -> None:
    with pytest.raises(ValueError, match="naive datetime"):
        json_rows([{"at": datetime(2026, 1, 1, 12, 0)}])


@dataclass
class _Thing:
    name: str


@pytest.mark.parametrize("cell", [_Thing("x"), {1, 2}, b"bytes", object()])
def test_what_is_no_column_value_is_refused_naming_its_type(cell: object) -> None:
    with pytest.raises(TypeError, match=f"{type(cell).__name__} is not a column value"):
        json_rows([{"id": "a", "cell": cell}])


def test_a_uuid_is_written_as_its_text() -> None:
    value = uuid.uuid4()
    assert json.loads(json_rows([{"id": value}])) == [{"id": str(value)}]
