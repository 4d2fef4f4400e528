"""Reading the sealed chain from the database: records in chain order, in constant memory,
as the export writes them (one representation for the database, the export and the
verifier), and the look-ups that explain a break."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import Connection, exists, func, select

from orchestrator.chain.canonical import CANONICAL_FIELDS, format_at
from orchestrator.chain.verifying import Owner
from orchestrator.store.core import audit_links, audit_records

__all__ = [
    "CHAIN_FIELDS",
    "DatabaseLookups",
    "HiddenRecord",
    "chain_records",
    "first_position",
    "hidden_records",
]

_AUDIT = audit_records.c
_LINK = audit_links.c
#: Every sealed record with its link, by ``seq`` (a link whose record is gone drops out: a
#: gap in the chain, which the verifier names).
_LINKED = audit_records.join(audit_links, _LINK.seq == _AUDIT.seq)
#: A record's fields in an export, in order: its canonical fields and its chain columns.
CHAIN_FIELDS: Final = (
    "chain_seq",
    *CANONICAL_FIELDS,
    "record_hash",
    "prev_hash",
    "chain_hash",
)
#: What a record's link adds to it.
_LINK_FIELDS = tuple(name for name in CHAIN_FIELDS if name not in CANONICAL_FIELDS)
_PAGE = 1000


@dataclass(frozen=True, slots=True)
class HiddenRecord:
    """A record that is not in the chain although records written after it are."""

    seq: int
    id: str


def hidden_records(db: Connection) -> list[HiddenRecord]:
    """Every unsealed record below the last sealed one: the sealer links records in ``seq``
    order and never goes back, so such a record was inserted after its neighbours were
    sealed, past the chain (a legitimate late commit is sealed before any record after it).
    A few at most on an untampered trail: none."""
    head = select(func.max(_LINK.seq)).scalar_subquery()
    rows = db.execute(
        select(_AUDIT.seq, _AUDIT.id)
        .where(_AUDIT.seq <= head, ~exists().where(_LINK.seq == _AUDIT.seq))
        .order_by(_AUDIT.seq)
    )
    return [HiddenRecord(int(row.seq), str(row.id)) for row in rows]


def _as_chain_record(row: Any) -> dict[str, Any]:
    record = {name: row[name] for name in CHAIN_FIELDS if name != "key"}
    record["key"] = row["dedupe_key"]
    record["at"] = format_at(row["at"])
    return record


def first_position(db: Connection, since: datetime) -> int | None:
    """The position of the first sealed record written at or after ``since``."""
    found = db.scalar(
        select(_LINK.chain_seq)
        .select_from(_LINKED)
        .where(_AUDIT.at >= since)
        .order_by(_LINK.chain_seq)
        .limit(1)
    )
    return int(found) if found is not None else None


def chain_records(
    db: Connection, *, since: datetime | None = None, until: datetime | None = None
) -> Iterator[dict[str, Any]]:
    """Every sealed record in chain order, one keyset page at a time: from the first written
    at or after ``since`` to the one before the first written at or after ``until`` (a
    contiguous stretch of the chain, whatever the clocks of concurrent writers said)."""
    last = 0
    if since is not None:
        start = first_position(db, since)
        if start is None:
            return
        last = start - 1
    end = first_position(db, until) if until is not None else None
    conditions = [] if end is None else [_LINK.chain_seq < end]
    while True:
        rows = (
            db.execute(
                select(audit_records, *(_LINK[name] for name in _LINK_FIELDS))
                .select_from(_LINKED)
                .where(_LINK.chain_seq > last, *conditions)
                .order_by(_LINK.chain_seq)
                .limit(_PAGE)
            )
            .mappings()
            .all()
        )
        for row in rows:
            yield _as_chain_record(row)
        if len(rows) < _PAGE:
            return
        last = int(rows[-1]["chain_seq"])


class DatabaseLookups:
    """:class:`~orchestrator.chain.verifying.Lookups` on the trail's records and links (a
    link whose record is gone is not there, as in :func:`chain_records`)."""

    def __init__(self, db: Connection) -> None:
        self._db = db

    def owners(self, hashes: set[str]) -> dict[str, Owner]:
        if not hashes:
            return {}
        rows = self._db.execute(
            select(_LINK.chain_hash, _LINK.chain_seq, _AUDIT.id)
            .select_from(_LINKED)
            .where(_LINK.chain_hash.in_(sorted(hashes)))
        )
        return {row.chain_hash: Owner(int(row.chain_seq), str(row.id)) for row in rows}

    def followed(self, hashes: set[str]) -> set[str]:
        if not hashes:
            return set()
        rows = self._db.scalars(
            select(_LINK.prev_hash)
            .select_from(_LINKED)
            .where(_LINK.prev_hash.in_(sorted(hashes)))
            .distinct()
        )
        return {str(found) for found in rows}
