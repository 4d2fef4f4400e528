"""The instruction-count benchmark's pure parts: reading callgrind's per-thread files and the
table (the measurement itself needs valgrind and runs as ``python -m bench.instructions``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.common import BenchError
from bench.instructions import Count, markdown_table, per_delivery, thread_totals


def _callgrind_file(path: Path, total: int) -> Path:
    """A per-thread file as callgrind writes it when counting started late: ``summary: 0``
    before the real ``totals:``."""
    path.write_text(
        "# callgrind format\nversion: 1\ncreator: callgrind-3.19.0\npid: 7\n"
        f"events: Ir\nsummary: 0\n\nfl=(1) x.c\nfn=(1) f\n1 {total}\ntotals: {total}\n",
        encoding="utf-8",
    )
    return path


def test_thread_totals_are_read_in_thread_order(tmp_path: Path) -> None:
    """``cg.out-10`` comes after ``cg.out-02`` (numeric, not text order); ``totals`` wins
    over a ``summary`` of 0."""
    files = [
        _callgrind_file(tmp_path / "cg.out-10", 10),
        _callgrind_file(tmp_path / "cg.out-01", 1_000),
        _callgrind_file(tmp_path / "cg.out-02", 200),
    ]
    assert thread_totals(files) == [1_000, 200, 10]


def test_a_file_without_totals_is_an_error(tmp_path: Path) -> None:
    broken = tmp_path / "cg.out-01"
    broken.write_text("events: Ir\nsummary: 0\n", encoding="utf-8")
    with pytest.raises(BenchError, match=r"no instruction total in cg\.out-01"):
        thread_totals([broken])


def test_the_table_shows_thousands_of_instructions_per_delivery() -> None:
    count = Count("ES256", 320, 32, 1_600, engine=1_376_000_000, others=1_904_000_000)
    assert count.total == 3_280_000_000
    assert per_delivery(count.engine, count.deliveries) == "860k"
    table = markdown_table([count])
    assert table.splitlines()[2] == "| ES256 | 320 | 32 | 1,600 | 860k | 1,190k | 2,050k |"
