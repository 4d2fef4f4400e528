"""What reading commands need of the schema, in SQLAlchemy Core: no ORM to import.

The metadata every model shares, the UTC timestamp type, and the audit trail's tables: the
records, which :class:`~orchestrator.store.models.AuditRow` maps (one definition for both),
the chain's links and its checkpoints.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.types import TypeDecorator

__all__ = [
    "AUDIT_LOCK_KEY",
    "HASH",
    "ID",
    "METADATA",
    "SEAL_LOCK_KEY",
    "UTCDateTime",
    "audit_checkpoints",
    "audit_links",
    "audit_records",
]

METADATA = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)
#: The PostgreSQL advisory lock of the audit trail ("AUDIT" in ASCII; the migrations use
#: another key). Every writer holds it shared from just before its insert to its commit, so a
#: reader can tell which transactions may still hold a ``seq``
#: (:func:`orchestrator.audit_query.audit_horizon`).
AUDIT_LOCK_KEY = 0x4155444954
#: The PostgreSQL advisory lock of the chain's sealer ("SEAL" in ASCII), taken exclusively by
#: the one sealing round at a time; writers never take it (:mod:`orchestrator.chain.sealing`).
SEAL_LOCK_KEY = 0x5345414C
#: A SHA-256 digest in lower-case hex.
HASH = String(64)
#: User, session and provider identifiers.
ID = String(255)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware (SQLite forgets zones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where UTC is required")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


#: One row per audit record; ``dedupe_key`` makes writing it again after a crash a no-op and
#: ``seq`` orders the trail exactly as it was written. Its place in the hash chain is a row of
#: :data:`audit_links`, which the sealer writes (see :mod:`orchestrator.chain`).
audit_records = Table(
    "audit_records",
    METADATA,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(36), unique=True, nullable=False),
    Column("dedupe_key", String(512), unique=True, nullable=False),
    Column("at", UTCDateTime(), index=True, nullable=False),
    Column("type", String(64), index=True, nullable=False),
    Column("event_id", String(64), index=True),
    Column("user_id", ID, index=True),
    Column("session_id", ID, index=True),
    Column("provider", ID),
    Column("outcome", String(32), nullable=False),
    Column("detail", JSON, nullable=False, default=dict),
)

#: The hash chain's links, one per sealed audit record (the record whose ``seq`` it names):
#: its position ``chain_seq`` (1, 2, ...), the hash of its canonical form, the chain hash
#: before it and its own. A table of its own, so that sealing a record is a narrow insert with
#: two index entries, not a new version of the record with its nine
#: (:mod:`orchestrator.chain.sealing`). No foreign key: the record's row is never locked for
#: its link; a link whose record was deleted shows as a gap in the chain.
audit_links = Table(
    "audit_links",
    METADATA,
    Column("chain_seq", BigInteger, primary_key=True, autoincrement=False),
    Column("seq", Integer, unique=True, nullable=False),
    Column("record_hash", HASH, nullable=False),
    Column("prev_hash", HASH, nullable=False),
    Column("chain_hash", HASH, nullable=False),
)

#: The signed checkpoints of the chain: its head (``head_hash`` at position ``count``) at
#: ``at``, as the JWS ``jws`` states it (the columns are only its copy, for queries).
audit_checkpoints = Table(
    "audit_checkpoints",
    METADATA,
    Column("id", String(36), primary_key=True),
    Column("at", UTCDateTime(), index=True, nullable=False),
    Column("count", BigInteger, nullable=False),
    Column("head_hash", HASH, nullable=False),
    Column("reason", String(16), nullable=False),
    Column("jws", Text, nullable=False),
)
