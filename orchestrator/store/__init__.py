"""Persistence: the session registry, deliveries, events and the audit trail."""

from orchestrator.store.engine import SessionFactory, make_engine, make_session_factory
from orchestrator.store.migrate import upgrade
from orchestrator.store.models import (
    TERMINAL_DELIVERY_STATUSES,
    AuditRow,
    Base,
    Delivery,
    DeliveryStatus,
    EventRecord,
    EventStatus,
    IdpSession,
    OutboxRow,
    PlanRow,
    Provider,
    ProviderSession,
    RejectedEvent,
    utcnow,
)

__all__ = [
    "TERMINAL_DELIVERY_STATUSES",
    "AuditRow",
    "Base",
    "Delivery",
    "DeliveryStatus",
    "EventRecord",
    "EventStatus",
    "IdpSession",
    "OutboxRow",
    "PlanRow",
    "Provider",
    "ProviderSession",
    "RejectedEvent",
    "SessionFactory",
    "make_engine",
    "make_session_factory",
    "upgrade",
    "utcnow",
]
