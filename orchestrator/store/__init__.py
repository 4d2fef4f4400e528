"""Persistence: the session registry, deliveries, events and the audit trail."""

from typing import TYPE_CHECKING

from schemas._lazy import lazy_exports

if TYPE_CHECKING:
    from orchestrator.store.engine import make_engine
    from orchestrator.store.migrate import (
        upgrade,
    )
    from orchestrator.store.models import (
        OPEN_DELIVERY_STATUSES,
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
    from orchestrator.store.sessions import SessionFactory, make_session_factory

__all__ = [
    "OPEN_DELIVERY_STATUSES",
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

__getattr__, __dir__ = lazy_exports(__name__)
