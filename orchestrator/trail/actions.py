"""The records of what people and other systems did: an operator's retry, replay and
provider changes, an audit purge, a Shared Signals SET received. Keys: see
:mod:`orchestrator.trail`."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from orchestrator.audit import AuditEntry
from orchestrator.trail.subjects import session_of, user_of
from schemas import AuditType, Event

__all__ = [
    "audit_purged",
    "delivery_retry_requested",
    "event_replayed",
    "provider_changed",
    "ssf_received",
    "ssf_stream_changed",
]


def delivery_retry_requested(delivery: Mapping[str, Any], actor: str) -> AuditEntry:
    """An operator asked for a new attempt of a failed delivery (a ``deliveries`` row)."""
    return AuditEntry(
        key=f"delivery.retry_requested:{delivery['id']}:{delivery['attempts']}",
        type=AuditType.DELIVERY_RETRY_REQUESTED,
        outcome="requested",
        event_id=delivery["event_id"],
        user_id=delivery["user_id"],
        session_id=delivery["session_id"],
        provider=delivery["provider"],
        detail={
            "delivery_id": delivery["id"],
            "actor": actor,
            "attempts": delivery["attempts"],
            "last_status_code": delivery["last_status_code"],
            "last_error": delivery["last_error"],
        },
    )


def event_replayed(
    rejected: Mapping[str, Any], event: Event, message_id: str, actor: str
) -> AuditEntry:
    """A rejected message (a ``rejected_events`` row) passed again and was published."""
    return AuditEntry(
        key=f"event.replayed:{rejected['id']}",
        type=AuditType.EVENT_REPLAYED,
        outcome="replayed",
        event_id=str(event.event_id),
        user_id=user_of(event),
        session_id=session_of(event),
        detail={
            "type": event.type,
            "rejected_record": rejected["id"],
            "rejected_message_id": rejected["message_id"],
            "message_id": message_id,
            "actor": actor,
        },
    )


def provider_changed(
    kind: AuditType, provider: str, actor: str, detail: Mapping[str, Any]
) -> AuditEntry:
    """An operator enabled, disabled or removed a provider, or had its sessions ended."""
    return AuditEntry(
        key=f"{kind.value}:{provider}:{uuid.uuid4()}",
        type=kind,
        outcome=kind.value.removeprefix("provider."),
        provider=provider,
        detail={"actor": actor, **detail},
    )


def audit_purged(
    checkpoint_id: str, before: datetime, deleted: int, through: int, actor: str | None
) -> AuditEntry:
    """Records before ``before`` were purged: ``deleted`` of them, positions up to
    ``through``, which the purge checkpoint ``checkpoint_id`` signed."""
    return AuditEntry(
        key=f"audit.purged:{checkpoint_id}",
        type=AuditType.AUDIT_PURGED,
        outcome="purged",
        detail={
            "before": before.isoformat(),
            "deleted": deleted,
            "through_position": through,
            "checkpoint_id": checkpoint_id,
            "actor": actor,
        },
    )


def ssf_received(stream: str, set_key: str, jti: str, effects: list[dict[str, Any]]) -> AuditEntry:
    """A SET an upstream transmitter pushed was accepted: ``effects`` names, per event, its
    type and what it caused (the event published, or why it was ignored). Outcome
    ``accepted`` when some event was published, else ``ignored``."""
    published = [e["event_id"] for e in effects if e.get("event_id")]
    return AuditEntry(
        key=f"ssf.received:{set_key}",
        type=AuditType.SSF_RECEIVED,
        outcome="accepted" if published else "ignored",
        event_id=published[0] if published else None,
        detail={"stream": stream, "jti": jti, "events": effects},
    )


def ssf_stream_changed(
    kind: AuditType,
    provider: str,
    actor: str,
    detail: Mapping[str, Any],
    user_id: str | None = None,
) -> AuditEntry:
    """A receiver (the API token ``actor``) created, changed or deleted its stream (the
    provider ``provider``), or added or removed a subject (``user_id``, None for every
    user): each changes who hears of users' ended sessions. ``detail`` never holds the
    stream's authorization header."""
    return AuditEntry(
        key=f"{kind.value}:{provider}:{uuid.uuid4()}",
        type=kind,
        outcome=kind.value.removeprefix("ssf.").split("_", 1)[1],
        user_id=user_id,
        provider=provider,
        detail={"actor": actor, **detail},
    )
