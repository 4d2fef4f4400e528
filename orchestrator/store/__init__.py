"""Persistence: the session registry, deliveries, events and the audit trail."""

from typing import TYPE_CHECKING

from schemas._lazy import lazy_exports

if TYPE_CHECKING:
    from orchestrator.store.database import Database, make_database
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
        ProviderSubscription,
        ReceivedSet,
        RejectedEvent,
        utcnow,
    )

__all__ = [
    "OPEN_DELIVERY_STATUSES",
    "TERMINAL_DELIVERY_STATUSES",
    "AuditRow",
    "Base",
    "Database",
    "Delivery",
    "DeliveryStatus",
    "EventRecord",
    "EventStatus",
    "IdpSession",
    "OutboxRow",
    "PlanRow",
    "Provider",
    "ProviderSession",
    "ProviderSubscription",
    "ReceivedSet",
    "RejectedEvent",
    "make_database",
    "make_engine",
    "upgrade",
    "utcnow",
]

__getattr__, __dir__ = lazy_exports(__name__)
