"""Audit contract: what auditors read, from the database or the JSON log."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["BINDING_LOGOUT_REASON", "DELIVERY_AUDIT_TYPES", "AuditRecord", "AuditType"]

BINDING_LOGOUT_REASON = "Session binding broken"


class AuditType(StrEnum):
    """Every kind of audit record the worker writes."""

    EVENT_RECEIVED = "event.received"
    EVENT_REJECTED = "event.rejected"
    EVENT_DUPLICATE = "event.duplicate"
    SESSION_STARTED = "session.started"
    SESSION_ENDED = "session.ended"
    SESSION_NOT_FOUND = "session.not_found"
    DELIVERY_SUCCEEDED = "delivery.succeeded"
    DELIVERY_RETRYING = "delivery.retrying"
    DELIVERY_FAILED = "delivery.failed"
    DELIVERY_SKIPPED = "delivery.skipped"
    LOGOUT_COMPLETED = "logout.completed"
    LOGOUT_SETTLED = "logout.settled"
    PLAN_BUILT = "plan.built"
    FRONTCHANNEL_LOADED = "frontchannel.loaded"
    FRONTCHANNEL_TIMED_OUT = "frontchannel.timed_out"
    FRONTCHANNEL_COMPLETED = "frontchannel.completed"
    FRONTCHANNEL_SKIPPED = "frontchannel.skipped"
    DELIVERY_RETRY_REQUESTED = "delivery.retry_requested"
    EVENT_REPLAYED = "event.replayed"
    PROVIDER_ENABLED = "provider.enabled"
    PROVIDER_DISABLED = "provider.disabled"
    PROVIDER_REMOVED = "provider.removed"
    PROVIDER_SESSIONS_ENDING = "provider.sessions_ending"
    AUDIT_PURGED = "audit.purged"
    SSF_RECEIVED = "ssf.received"
    SSF_STREAM_CREATED = "ssf.stream_created"
    SSF_STREAM_UPDATED = "ssf.stream_updated"
    SSF_STREAM_DELETED = "ssf.stream_deleted"
    SSF_SUBJECT_ADDED = "ssf.subject_added"
    SSF_SUBJECT_REMOVED = "ssf.subject_removed"


#: The records of a delivery's outcome, one per delivery status but pending:
#: ``delivery.<status>`` (final, or retrying).
DELIVERY_AUDIT_TYPES: Final = frozenset(
    {
        AuditType.DELIVERY_SUCCEEDED,
        AuditType.DELIVERY_RETRYING,
        AuditType.DELIVERY_FAILED,
        AuditType.DELIVERY_SKIPPED,
    }
)


class AuditRecord(BaseModel):
    """One audited fact. ``detail`` never holds a token, a SAML message or a key."""

    model_config = ConfigDict(frozen=True)

    id: str
    at: datetime
    type: AuditType
    event_id: str | None = None
    user_id: str | None = None
    session_id: str | None = None
    provider: str | None = None
    outcome: str
    detail: dict[str, Any] = Field(default_factory=dict)
