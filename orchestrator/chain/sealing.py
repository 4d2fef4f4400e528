"""The sealer: links committed audit records into the chain, in the order they were written.

Writers do nothing for the chain (:func:`orchestrator.audit.write_audit` is as it was): none
of them waits for another, nor spends time on hashing, on the fan-out's path. A sealing
round, run by every worker every ``audit_seal_interval`` and by the commands that read the
chain, takes the records that no transaction can still be writing (the
:func:`~orchestrator.audit_query.audit_horizon`) and not yet sealed, in ``seq`` order, and
writes each a link (:data:`~orchestrator.store.core.audit_links`): the hash of its canonical
form (``record_hash``), its position (``chain_seq``, 1, 2, ...), the chain hash before it
(``prev_hash``) and its own (``chain_hash``), one INSERT per page of records; the records
themselves are never rewritten. Rounds exclude each other: on PostgreSQL by an advisory lock
only sealers take (:data:`SEAL_LOCK_KEY`), on SQLite by its single writer, and on both by the
unique ``chain_seq`` and ``seq`` of a link (a round that lost a race stops: the winner sealed
those records). A worker's round skips when another holds the lock (that one is sealing the
same records; no worker queues behind it every few seconds); a command waits for it, since
it reads the whole trail next. A record that commits late (a lower ``seq``) is below the
horizon only once it committed, so the chain's order is ``seq`` order, always.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, insert, select, text
from sqlalchemy.exc import IntegrityError

from orchestrator.audit_query import audit_horizon
from orchestrator.chain.canonical import GENESIS, chain_hash, record_hash
from orchestrator.store.core import SEAL_LOCK_KEY, audit_checkpoints, audit_links, audit_records
from orchestrator.store.sql import json_rows

__all__ = [
    "SEAL_PAGE",
    "ChainHead",
    "chain_head",
    "seal",
    "take_seal_lock",
    "try_seal_lock",
    "unsealed_fields",
]

#: How many records one sealing transaction links.
SEAL_PAGE = 1000

_AUDIT = audit_records.c
_SEALING = text("SELECT pg_advisory_xact_lock(:key)").bindparams(key=SEAL_LOCK_KEY)
_TRY_SEALING = text("SELECT pg_try_advisory_xact_lock(:key)").bindparams(key=SEAL_LOCK_KEY)
#: SQLite's writer lock, taken before the round reads the head: a write that changes nothing.
_SQLITE_WRITER = text("UPDATE audit_checkpoints SET id = id WHERE 1 = 0")
#: What a record's canonical form is made of, as columns.
_CANONICAL_COLUMNS = (
    _AUDIT.id,
    _AUDIT.at,
    _AUDIT.type,
    _AUDIT.event_id,
    _AUDIT.user_id,
    _AUDIT.session_id,
    _AUDIT.provider,
    _AUDIT.outcome,
    _AUDIT.detail,
    _AUDIT.dedupe_key,
)
_LINK = audit_links.c
#: A page of links in one statement on PostgreSQL: one JSON array that the server expands
#: over the table's row type, whatever the page's size (one cached statement). Bound as five
#: arrays, the links cost psycopg a Python loop over every element with a quoting check
#: each, about a third of a round's client CPU; :func:`~orchestrator.store.sql.json_rows` writes
#: the lot at once, in C (orjson).
_LINK_ROWS = text(
    "INSERT INTO audit_links (chain_seq, seq, record_hash, prev_hash, chain_hash) "
    "SELECT r.chain_seq, r.seq, r.record_hash, r.prev_hash, r.chain_hash "
    "FROM json_populate_recordset(NULL::audit_links, CAST(:b_links AS json)) AS r"
)


def _link_page(db: Connection, links: list[dict[str, Any]]) -> None:
    """Write a page of links: one statement on PostgreSQL, executemany elsewhere."""
    if db.dialect.name != "postgresql":
        db.execute(insert(audit_links), links)
        return
    db.execute(_LINK_ROWS, {"b_links": json_rows(links)})


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The chain's last link: ``count`` records sealed so far, the last one's chain hash."""

    count: int
    hash: str
    #: The last sealed record's ``seq`` (0 when no link is left).
    seq: int = 0


def chain_head(db: Connection) -> ChainHead:
    """The last sealed record's position and chain hash; when none is left (nothing sealed
    yet, or a purge removed them all), the latest purge checkpoint's, else the genesis."""
    row = db.execute(
        select(_LINK.chain_seq, _LINK.chain_hash, _LINK.seq)
        .order_by(_LINK.chain_seq.desc())
        .limit(1)
    ).first()
    if row is not None:
        return ChainHead(int(row.chain_seq), str(row.chain_hash), int(row.seq))
    checkpoint = db.execute(
        select(audit_checkpoints.c.count, audit_checkpoints.c.head_hash)
        .where(audit_checkpoints.c.reason == "purge")
        .order_by(audit_checkpoints.c.count.desc())
        .limit(1)
    ).first()
    if checkpoint is not None:
        return ChainHead(int(checkpoint[0]), str(checkpoint[1]))
    return ChainHead(0, GENESIS)


def unsealed_fields(row: Any) -> dict[str, Any]:
    """A row's canonical fields by their canonical names (``key`` for ``dedupe_key``)."""
    fields = {column.name: row[column.name] for column in _CANONICAL_COLUMNS}
    fields["key"] = fields.pop("dedupe_key")
    return fields


def take_seal_lock(db: Connection) -> None:
    """Exclude every other sealing round (and purge) until this transaction ends."""
    db.execute(_SEALING if db.dialect.name == "postgresql" else _SQLITE_WRITER)


def try_seal_lock(db: Connection) -> bool:
    """:func:`take_seal_lock` unless another transaction holds it (False: not taken). On
    SQLite it waits for the writer lock as :func:`take_seal_lock` does (one process)."""
    if db.dialect.name != "postgresql":
        db.execute(_SQLITE_WRITER)
        return True
    return bool(db.scalar(_TRY_SEALING))


def _seal_page(db: Connection, horizon: int | None, page: int, wait: bool) -> int | None:
    """Link a page of records; None when ``wait`` is false and another round holds the lock."""
    if wait:
        take_seal_lock(db)
    elif not try_seal_lock(db):
        return None
    head = chain_head(db)
    # Sealed records are exactly those up to a seq (the chain's order is seq order): start
    # after the head's, so a round reads no sealed record, however long the trail (a range
    # of the primary key; asking the links which are unsealed would scan every link).
    conditions: list[ColumnElement[bool]] = [_AUDIT.seq > head.seq]
    if horizon is not None:
        conditions.append(_AUDIT.seq <= horizon)
    query = select(_AUDIT.seq, *_CANONICAL_COLUMNS).where(*conditions).order_by(_AUDIT.seq)
    rows = db.execute(query.limit(page)).mappings().all()  # one fetch, not one per row
    links: list[dict[str, Any]] = []
    for row in rows:
        own = record_hash(unsealed_fields(row))
        linked = chain_hash(head.hash, own)
        links.append(
            {
                "chain_seq": head.count + 1,
                "seq": row["seq"],
                "record_hash": own,
                "prev_hash": head.hash,
                "chain_hash": linked,
            }
        )
        head = ChainHead(head.count + 1, linked, row["seq"])
    if links:
        _link_page(db, links)
    return len(links)


def seal(engine: Engine, *, page: int = SEAL_PAGE, wait: bool = True) -> int:
    """Link every committed, unsealed record into the chain; returns how many were linked.

    ``wait`` false (the workers' periodic round): stop, sealing nothing more, when another
    round holds the seal lock. Call it outside any transaction that wrote audit records (the
    horizon waits for them).
    """
    with engine.connect() as conn:
        horizon = audit_horizon(conn)
    sealed = 0
    while True:
        try:
            with engine.begin() as db:
                linked = _seal_page(db, horizon, page, wait)
        except IntegrityError:
            return sealed  # another round sealed these records first
        if linked is None:
            return sealed  # another round is sealing them now
        sealed += linked
        if linked < page:
            return sealed
