"""Recording what a worker refuses: one ``rejected_events`` row and one ``event.rejected``
record per message, whatever the message holds.

A message may be anything a broker carries: bytes that are no JSON, a message for an
unknown actor, an event with NUL characters or nested 500 deep. Everything stored is
bounded and printable: control characters (NUL included, which PostgreSQL text cannot hold
and which breaks ``->>`` on JSON) are written as escapes, the raw bytes kept in the audit
record are at most :data:`AUDIT_RAW_BYTES` (base64 when they are no UTF-8 text), and the
stored payload at most :data:`PAYLOAD_CHARS` characters.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import Engine

from orchestrator.audit import AuditEntry, emit, write_audit
from orchestrator.store import utcnow
from orchestrator.store.sql import insert_ignore
from orchestrator.store.tables import REJECTED_EVENTS
from orchestrator.trail import event_rejected
from schemas import EVENT_TYPES
from schemas.fields import printable
from schemas.redaction import redact_text

__all__ = [
    "AUDIT_RAW_BYTES",
    "MAX_ID",
    "PAYLOAD_CHARS",
    "Rejection",
    "raw_detail",
    "raw_text",
    "record_rejections",
    "rejection_id",
]

_log = structlog.get_logger("logout.pipeline")

#: Longest message or event id stored (the columns' width).
MAX_ID = 64
#: Most characters of a rejected message kept in ``rejected_events.payload``.
PAYLOAD_CHARS = 1_000_000
#: Most bytes of a rejected message kept in its ``event.rejected`` record.
AUDIT_RAW_BYTES = 4096
#: Most characters of one problem sentence.
_PROBLEM_CHARS = 1000


def rejection_id(candidate: object, raw: bytes) -> str:
    """``candidate`` when it is a usable id (a printable string of at most 64 characters);
    otherwise one derived from the raw bytes, the same each time the message comes back."""
    if isinstance(candidate, str) and 0 < len(candidate) <= MAX_ID and candidate.isprintable():
        return candidate
    return "sha256:" + hashlib.sha256(raw).hexdigest()[: MAX_ID - 7]


def raw_text(raw: bytes) -> str:
    """The raw bytes as stored text: UTF-8 where they are, ``\\xNN`` escapes elsewhere; JWTs
    and secret-named values masked (:func:`~schemas.redaction.redact_text`)."""
    text = raw.decode("utf-8", errors="backslashreplace")
    return printable(redact_text(text), PAYLOAD_CHARS)


def raw_detail(raw: bytes) -> dict[str, Any]:
    """The raw bytes for an audit record: their size, digest and first bytes (UTF-8 text
    with control characters escaped and secrets masked, or base64 when they are no UTF-8)."""
    head = raw[:AUDIT_RAW_BYTES]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # not merely a character cut at the limit
            return {
                "bytes": len(raw),
                "sha256": hashlib.sha256(raw).hexdigest(),
                "base64": base64.b64encode(head).decode("ascii"),
                "truncated": len(raw) > len(head),
            }
        text = head[: exc.start].decode("utf-8")
    return {
        "bytes": len(raw),
        "sha256": hashlib.sha256(raw).hexdigest(),
        "text": printable(redact_text(text)),
        "truncated": len(raw) > len(head),
    }


@dataclass(frozen=True, slots=True)
class Rejection:
    """One refused message: its id, what it held, and why it was refused."""

    message_id: str
    payload: str
    problems: Sequence[str]
    event_id: str | None = None
    #: The raw message (see :func:`raw_detail`), for messages refused before decoding.
    raw: dict[str, Any] | None = field(default=None)


def _event_type(payload: str) -> str | None:
    """The event type ``payload`` names when it is a JSON object whose ``type`` is a known
    one (so metrics count it under that type); None otherwise."""
    if not payload.startswith("{"):
        return None
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    kind = data.get("type") if isinstance(data, dict) else None
    return kind if isinstance(kind, str) and kind in EVENT_TYPES else None


def record_rejections(engine: Engine, rejections: Sequence[Rejection]) -> None:
    """Store each rejection and its ``event.rejected`` record (one transaction), then log
    them. A message rejected again (redelivered) writes nothing twice."""
    if not rejections:
        return
    now = utcnow()
    rows: list[dict[str, Any]] = []
    entries: list[AuditEntry] = []
    for rejection in rejections:
        message_id = printable(rejection.message_id)[:MAX_ID]
        event_id = (
            printable(rejection.event_id)[:MAX_ID] if rejection.event_id is not None else None
        )
        problems = [printable(p, _PROBLEM_CHARS) for p in rejection.problems]
        rows.append(
            {
                "message_id": message_id,
                "event_id": event_id,
                "received_at": now,
                "payload": printable(rejection.payload, PAYLOAD_CHARS),
                "problems": problems,
            }
        )
        detail: dict[str, Any] = {"message_id": message_id, "problems": problems}
        if rejection.raw is not None:
            detail["raw"] = rejection.raw
        entries.append(event_rejected(message_id, event_id, detail, _event_type(rejection.payload)))
        _log.warning("event rejected", message_id=message_id, problems=problems)
    with engine.begin() as conn:
        conn.execute(insert_ignore(conn, REJECTED_EVENTS, ["message_id"]), rows)
        records = write_audit(conn, entries, at=now)
    emit(records)
