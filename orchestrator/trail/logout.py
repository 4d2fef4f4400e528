"""The engine's records: an event received, refused or seen again, sessions started and
ended, a plan built, each delivery's outcome, a logout completed and settled, front-channel
outcomes. Keys: see :mod:`orchestrator.trail`."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from orchestrator.audit import AuditEntry
from orchestrator.store import DeliveryStatus
from orchestrator.trail.subjects import session_of, user_of
from schemas import (
    BINDING_LOGOUT_REASON,
    AuditType,
    DeviceVerdict,
    Event,
    LogoutPlan,
    LogoutUser,
    PlanEntry,
    SessionBindingViolation,
    SessionRevoke,
    SessionStarted,
)
from schemas.audit import DELIVERY_AUDIT_TYPES

if TYPE_CHECKING:
    from orchestrator.logout.batch import Outcome, Work
    from orchestrator.logout.rollup import Tally


__all__ = [
    "delivery_outcome",
    "event_duplicate",
    "event_received",
    "event_rejected",
    "frontchannel_outcome",
    "logout_completed",
    "logout_settled",
    "plan_built",
    "session_ended",
    "session_not_found",
    "session_started",
]


def event_received(event: Event, message_id: str) -> AuditEntry:
    """A logout event was accepted (its first message)."""
    detail: dict[str, Any] = {
        "type": event.type,
        "initiator": event.initiator,
        "actor": event.actor,
        "message_id": message_id,
        "occurred_at": event.occurred_at.isoformat(),
    }
    if event.request is not None:
        detail["request"] = event.request.model_dump(mode="json", exclude={"args"})
    return AuditEntry(
        key=f"event.received:{event.event_id}",
        type=AuditType.EVENT_RECEIVED,
        outcome="accepted",
        event_id=str(event.event_id),
        user_id=user_of(event),
        session_id=session_of(event),
        detail=detail,
    )


def event_duplicate(
    event: Event,
    message_id: str,
    *,
    first_message_id: str,
    first_received_at: datetime,
    first_status: str,
    same_payload: bool,
) -> AuditEntry:
    """Another message of an event already received."""
    return AuditEntry(
        key=f"event.duplicate:{event.event_id}:{message_id}",
        type=AuditType.EVENT_DUPLICATE,
        outcome="ignored",
        event_id=str(event.event_id),
        user_id=user_of(event),
        session_id=session_of(event),
        detail={
            "type": event.type,
            "message_id": message_id,
            "first_message_id": first_message_id,
            "first_received_at": first_received_at.isoformat(),
            "first_status": first_status,
            "same_payload": same_payload,
        },
    )


def event_rejected(
    message_id: str,
    event_id: str | None,
    detail: dict[str, Any],
    event_type: str | None = None,
) -> AuditEntry:
    """A message that is no valid event (``detail``: its problems, the raw payload), with
    the type its payload names when that is a known event type."""
    if event_type is not None:
        detail = {"type": event_type, **detail}
    return AuditEntry(
        key=f"event.rejected:{message_id}",
        type=AuditType.EVENT_REJECTED,
        outcome="rejected",
        event_id=event_id,
        detail=detail,
    )


def session_started(event: SessionStarted, device: DeviceVerdict) -> AuditEntry:
    """An IdP session was recorded; ``device``: whether its login came from a known device
    (``known_device``) and why (``known_device_reason``), never the device's cookie id."""
    return AuditEntry(
        key=f"session.started:{event.session_id}",
        type=AuditType.SESSION_STARTED,
        outcome="started",
        event_id=str(event.event_id),
        user_id=event.user_id,
        session_id=event.session_id,
        detail={
            "initiator": event.initiator,
            "ip": event.ip,
            "remember_me": event.remember_me,
            "stay_signed_in": event.stay_signed_in,
            "network_binding": event.network_binding,
            "geoip_binding": event.geoip_binding,
            "known_device": device.known,
            "known_device_reason": device.reason,
        },
    )


def session_ended(event: Event, session_id: str, user_id: str, reason: str) -> AuditEntry:
    """``event`` ended one IdP session, for ``reason`` (its ``end_reason``)."""
    detail: dict[str, Any] = {
        "end_reason": reason,
        "initiator": event.initiator,
        "actor": event.actor,
    }
    if isinstance(event, SessionBindingViolation):
        detail.update(
            logout_reason=BINDING_LOGOUT_REASON,
            binding=event.binding.model_dump(mode="json"),
            ip=event.ip.model_dump(mode="json"),
            asn=event.asn.model_dump(mode="json"),
            geo=event.geo.model_dump(mode="json"),
            http_request=event.http_request.model_dump(mode="json"),
        )
    if isinstance(event, LogoutUser) and event.plan_id is not None:
        detail["plan_id"] = event.plan_id
    if isinstance(event, SessionRevoke) and event.reason is not None:
        detail["reason"] = event.reason
    return AuditEntry(
        key=f"session.ended:{session_id}",
        type=AuditType.SESSION_ENDED,
        outcome="ended",
        event_id=str(event.event_id),
        user_id=user_id,
        session_id=session_id,
        detail=detail,
    )


def session_not_found(
    event_id: str,
    session_id: str,
    user_id: str | None,
    ended: tuple[datetime | None, str | None] | None,
    *,
    named_user: str | None = None,
) -> AuditEntry:
    """The session an event named is unknown, (``ended``: when, why) already ended, or open
    and not ``named_user``'s, the user the event said it belongs to (it stays open)."""
    detail: dict[str, Any] = {"reason": "unknown session"}
    outcome = "already_ended" if ended is not None else "not_found"
    if named_user is not None:
        detail = {"reason": "session of another user", "named_user": named_user}
        outcome = "not_owned"
    if ended is not None:
        ended_at, end_reason = ended
        detail = {
            "reason": "session already ended",
            "ended_at": ended_at.isoformat() if ended_at else None,
            "end_reason": end_reason,
        }
    return AuditEntry(
        key=f"session.not_found:{event_id}:{session_id}",
        type=AuditType.SESSION_NOT_FOUND,
        outcome=outcome,
        event_id=event_id,
        user_id=user_id,
        session_id=session_id,
        detail=detail,
    )


def plan_built(plan: LogoutPlan, left_out: list[dict[str, str]] | None = None) -> AuditEntry:
    """A stage plan was stored; ``left_out`` names the entries that could not be built."""
    detail: dict[str, Any] = {
        "plan_id": plan.plan_id,
        "stages": [
            {"index": s.index, "kind": s.kind, "entries": len(s.entries)} for s in plan.stages
        ],
        "responds_to": plan.respond_to.provider if plan.respond_to else None,
    }
    if left_out:
        detail["left_out"] = left_out
    return AuditEntry(
        key=f"plan.built:{plan.plan_id}",
        type=AuditType.PLAN_BUILT,
        outcome="built",
        event_id=plan.event_id,
        user_id=plan.user_id,
        session_id=plan.session_id,
        detail=detail,
    )


#: The record each delivery status writes: ``delivery.<status>`` (pending writes none).
_DELIVERY_TYPES: Final = {
    DeliveryStatus(kind.removeprefix("delivery.")): kind for kind in DELIVERY_AUDIT_TYPES
}


def delivery_outcome(work: Work, outcome: Outcome) -> AuditEntry:
    """What one attempt of one delivery came to (a retry is one record per attempt)."""
    kind = _DELIVERY_TYPES[outcome.status]
    detail: dict[str, Any] = {
        "delivery_id": work.delivery_id,
        "protocol": work.provider.protocol,
        "attempt": work.attempt,
    }
    if outcome.status_code is not None:
        detail["status_code"] = outcome.status_code
    if outcome.status is DeliveryStatus.SKIPPED:
        detail["reason"] = outcome.detail
    elif outcome.detail is not None:
        detail["error"] = outcome.detail
    if outcome.next_attempt_at is not None:
        detail["next_attempt_at"] = outcome.next_attempt_at.isoformat()
    if outcome.retry_after is not None:
        detail["retry_after"] = outcome.retry_after
    if outcome.latency is not None:
        detail["latency_ms"] = round(outcome.latency * 1000, 3)
    if outcome.error_class is not None:
        detail["error_class"] = outcome.error_class
    for name, value in outcome.facts.items():
        detail.setdefault(name, value)  # never over what the record itself says
    return AuditEntry(
        key=f"{kind.value}:{work.delivery_id}:{work.attempt}",
        type=kind,
        outcome=outcome.status.value,
        event_id=work.context.event_id,
        user_id=work.session.user_id,
        session_id=work.session.session_id,
        provider=work.provider.name,
        detail=detail,
    )


def logout_completed(
    event: Event, user_id: str | None, sessions_ended: int, tally: Tally
) -> AuditEntry:
    """The roll-up of one handling of a logout: its deliveries as this handling left them."""
    return AuditEntry(
        key=f"logout.completed:{event.event_id}",
        type=AuditType.LOGOUT_COMPLETED,
        outcome=tally.completed_outcome,
        event_id=str(event.event_id),
        user_id=user_id,
        session_id=session_of(event),
        detail={
            "type": event.type,
            "sessions_ended": sessions_ended,
            "deliveries": tally.as_detail(),
        },
    )


def logout_settled(
    event_id: str,
    user_id: str | None,
    session_id: str | None,
    tally: Tally,
    retries: int = 0,
) -> AuditEntry:
    """The word on one logout once every delivery is final: their outcomes, counted.

    An operator's retry (``deliveries retry``) moves a failed delivery on again, so there is
    one settlement per retry generation: ``retries`` is the number of retries requested for
    the event's deliveries so far; the latest record is the logout's word."""
    detail: dict[str, Any] = {"deliveries": tally.as_detail()}
    if retries:
        detail["retries_requested"] = retries
    return AuditEntry(
        key=f"logout.settled:{event_id}" + (f":{retries}" if retries else ""),
        type=AuditType.LOGOUT_SETTLED,
        outcome=tally.settled_outcome,
        event_id=event_id,
        user_id=user_id,
        session_id=session_id,
        detail=detail,
    )


def frontchannel_outcome(
    plan: LogoutPlan,
    entry: PlanEntry,
    kind: AuditType,
    outcome: str,
    detail: Mapping[str, Any],
) -> AuditEntry:
    """What the browser reported for one plan entry (every outcome shares one key)."""
    return AuditEntry(
        key=f"frontchannel:{plan.plan_id}:{entry.entry_id}",
        type=kind,
        outcome=outcome,
        event_id=plan.event_id,
        user_id=plan.user_id,
        session_id=plan.session_id,
        provider=entry.provider,
        detail={
            "plan_id": plan.plan_id,
            "entry_id": entry.entry_id,
            "delivery_id": entry.delivery_id,
            "protocol": entry.protocol,
            "binding": entry.binding,
            **detail,
        },
    )
