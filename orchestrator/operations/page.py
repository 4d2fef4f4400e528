"""One page of a listing: the latest rows, shown oldest first, and how many matched when the
limit cut it (counted only then), as ``audit list`` pages."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection, Select, func, select
from sqlalchemy.sql.elements import ColumnElement

__all__ = ["TABLE_LIMIT", "Page", "read_page"]

#: Rows a listing shows when no limit is given.
TABLE_LIMIT = 1000

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Page(Generic[_T]):
    """``items`` oldest first; ``total`` matched (equal to ``len(items)`` when not cut)."""

    items: Sequence[_T]
    total: int

    @property
    def cut(self) -> bool:
        return self.total > len(self.items)


def read_page(
    conn: Connection,
    query: Select[Any],
    newest_first: Sequence[ColumnElement[Any]],
    limit: int | None,
    convert: Callable[[Any], _T],
) -> Page[_T]:
    """The latest ``limit`` rows of ``query`` (every row when None), oldest first."""
    ordered = query.order_by(*newest_first)
    rows = conn.execute(ordered if limit is None else ordered.limit(limit + 1)).mappings().all()
    total = len(rows)
    if limit is not None and total > limit:
        rows = rows[:limit]
        counted = select(func.count()).select_from(query.order_by(None).subquery())
        total = int(conn.scalar(counted) or 0)
    return Page([convert(row) for row in reversed(rows)], total)
