"""Typed Core handles of the mapped tables, for the hot paths (SQLAlchemy Core, no ORM).

Each model's table is taken once here; everything that writes SQL by hand uses these.
"""

from __future__ import annotations

from sqlalchemy import Table

from orchestrator.store.models import (
    Base,
    Delivery,
    EventRecord,
    IdpSession,
    OutboxRow,
    PlanRow,
    Provider,
    ProviderSession,
    ProviderSubscription,
    ReceivedSet,
    RejectedEvent,
)

__all__ = [
    "DELIVERIES",
    "EVENTS",
    "IDP_SESSIONS",
    "OUTBOX",
    "PLANS",
    "PROVIDERS",
    "PROVIDER_SESSIONS",
    "PROVIDER_SUBSCRIPTIONS",
    "RECEIVED_SETS",
    "REJECTED_EVENTS",
]


def _table(model: type[Base]) -> Table:
    table = model.__table__
    if not isinstance(table, Table):  # pragma: no cover - every model maps one table
        raise TypeError(f"{model.__name__} maps no single table")
    return table


DELIVERIES = _table(Delivery)
EVENTS = _table(EventRecord)
IDP_SESSIONS = _table(IdpSession)
OUTBOX = _table(OutboxRow)
PLANS = _table(PlanRow)
PROVIDERS = _table(Provider)
PROVIDER_SESSIONS = _table(ProviderSession)
PROVIDER_SUBSCRIPTIONS = _table(ProviderSubscription)
REJECTED_EVENTS = _table(RejectedEvent)
RECEIVED_SETS = _table(ReceivedSet)
