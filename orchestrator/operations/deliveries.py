"""Deliveries as the operator sees them: the filters of ``deliveries list`` and
``/v1/deliveries``, and one page of them (a retry is :mod:`~orchestrator.operations.retries`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Engine, select

from orchestrator.audit_query import resolve_event_id
from orchestrator.errors import InputError, Problem
from orchestrator.operations.page import Page, read_page
from orchestrator.store import DeliveryStatus
from orchestrator.store.tables import DELIVERIES

__all__ = ["COLUMNS", "DeliveryQuery", "DeliveryView", "delivery_query", "list_deliveries", "view"]


@dataclass(frozen=True, slots=True)
class DeliveryQuery:
    """Filters, combined with AND: ``since`` is on the last change (``updated_at``)."""

    status: DeliveryStatus | None = None
    provider: str | None = None
    event_id: str | None = None
    since: datetime | None = None

    def where(self) -> list[Any]:
        c = DELIVERIES.c
        where: list[Any] = []
        if self.status is not None:
            where.append(c.status == self.status.value)
        if self.provider is not None:
            where.append(c.provider == self.provider)
        if self.event_id is not None:
            where.append(c.event_id == self.event_id)
        if self.since is not None:
            where.append(c.updated_at >= self.since)
        return where


def delivery_query(
    engine: Engine,
    *,
    status: str | None = None,
    provider: str | None = None,
    event: str | None = None,
    since: datetime | None = None,
) -> DeliveryQuery:
    """The filters as an operator gives them: ``status`` by name and ``event`` as an event id
    or a unique start of one; a bad one is an :class:`InputError` naming the field."""
    known = ", ".join(s.value for s in DeliveryStatus)
    if status is not None and status not in {s.value for s in DeliveryStatus}:
        raise InputError([Problem("", "status", f"one of {known}; got {status!r}")])
    event_id = None
    if event is not None:
        with engine.connect() as conn:
            event_id = resolve_event_id(conn, event)
    chosen = DeliveryStatus(status) if status is not None else None
    return DeliveryQuery(chosen, provider, event_id, since)


class DeliveryView(BaseModel):
    """One delivery as the operator sees it (``deliveries list --json``, ``/v1/deliveries``)."""

    model_config = ConfigDict(frozen=True)

    id: str
    event_id: str
    provider: str
    user_id: str
    session_id: str
    status: DeliveryStatus
    attempts: int
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    next_attempt_at: datetime | None

    def as_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


#: The columns of a :class:`DeliveryView`.
COLUMNS = [DELIVERIES.c[name] for name in DeliveryView.model_fields]


def view(row: Any) -> DeliveryView:
    """A ``deliveries`` row (of :data:`COLUMNS`) as a view."""
    return DeliveryView.model_validate({name: row[name] for name in DeliveryView.model_fields})


def list_deliveries(engine: Engine, query: DeliveryQuery, limit: int | None) -> Page[DeliveryView]:
    """The latest ``limit`` deliveries ``query`` selects (by last change), oldest first."""
    statement = select(*COLUMNS).where(*query.where())
    newest_first = [DELIVERIES.c.updated_at.desc(), DELIVERIES.c.id.desc()]
    with engine.connect() as conn:
        return read_page(conn, statement, newest_first, limit, view)
