"""Every kind of audit record, built in one place: one constructor and one dedupe key each.

A record about one event names its type in ``detail["type"]`` (``event.received``,
``event.duplicate``, ``event.rejected`` when the payload names a known type,
``logout.completed``), so every reader finds it under one key.

A key names the fact, not the attempt to write it, so a replayed step writes nothing twice
(:func:`orchestrator.audit.write_audit` ignores a key already written). The keys:

========================= ==============================================
``event.received``        ``event.received:<event_id>``
``event.duplicate``       ``event.duplicate:<event_id>:<message_id>``
``event.rejected``        ``event.rejected:<message_id>``
``session.started``       ``session.started:<session_id>``
``session.ended``         ``session.ended:<session_id>``
``session.not_found``     ``session.not_found:<event_id>:<session_id>``
``plan.built``            ``plan.built:<plan_id>``
``delivery.<status>``     ``delivery.<status>:<delivery_id>:<attempt>`` (an attempt is fenced)
``delivery.retry_req...`` ``delivery.retry_requested:<delivery_id>:<attempts so far>``
``event.replayed``        ``event.replayed:<rejected_events id>``
``provider.*``            ``<type>:<provider>:<uuid>`` (each operator action is its own fact)
``logout.completed``      ``logout.completed:<event_id>``
``logout.settled``        ``logout.settled:<event_id>[:<retries requested>]`` (per retry)
``frontchannel.*``        ``frontchannel:<plan_id>:<entry_id>`` (the first outcome stands)
``audit.purged``          ``audit.purged:<checkpoint_id>``
``ssf.received``          ``ssf.received:<set key>`` (SHA-256 of the SET's iss and jti)
``ssf.stream_*``          ``<type>:<provider>:<uuid>`` (each receiver's change is its own fact)
``ssf.subject_*``         ``<type>:<provider>:<uuid>``
========================= ==============================================
"""

from orchestrator.trail.actions import (
    audit_purged,
    delivery_retry_requested,
    event_replayed,
    provider_changed,
    ssf_received,
    ssf_stream_changed,
)
from orchestrator.trail.logout import (
    delivery_outcome,
    event_duplicate,
    event_received,
    event_rejected,
    frontchannel_outcome,
    logout_completed,
    logout_settled,
    plan_built,
    session_ended,
    session_not_found,
    session_started,
)

__all__ = [
    "audit_purged",
    "delivery_outcome",
    "delivery_retry_requested",
    "event_duplicate",
    "event_received",
    "event_rejected",
    "event_replayed",
    "frontchannel_outcome",
    "logout_completed",
    "logout_settled",
    "plan_built",
    "provider_changed",
    "session_ended",
    "session_not_found",
    "session_started",
    "ssf_received",
    "ssf_stream_changed",
]
