"""Rejected events as the operator sees them, with their problems (``events rejected``,
``/v1/rejected-events``); replaying one is :mod:`~orchestrator.operations.replay`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Engine, String, cast, literal, select

from orchestrator.operations.page import Page, read_page
from orchestrator.store.core import audit_records
from orchestrator.store.tables import REJECTED_EVENTS

__all__ = ["REPLAYED", "RejectedView", "list_rejected"]


class RejectedView(BaseModel):
    """One rejected message, with every problem; ``replayed_as``: the event id a replay
    published, if any (``events rejected --json``, ``/v1/rejected-events``)."""

    model_config = ConfigDict(frozen=True)

    id: int
    message_id: str
    event_id: str | None
    received_at: datetime
    problems: list[str]
    replayed_as: str | None

    def as_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


_R = REJECTED_EVENTS.c
_REPLAY_KEY = literal("event.replayed:") + cast(_R.id, String)
#: The event id a replay of a ``rejected_events`` row published (its ``event.replayed``).
REPLAYED = (
    select(audit_records.c.event_id)
    .where(audit_records.c.dedupe_key == _REPLAY_KEY)
    .scalar_subquery()
    .label("replayed_as")
)


def _view(row: Any) -> RejectedView:
    return RejectedView(
        id=row["id"],
        message_id=row["message_id"],
        event_id=row["event_id"],
        received_at=row["received_at"],
        problems=list(row["problems"] or []),
        replayed_as=row["replayed_as"],
    )


def list_rejected(engine: Engine, since: datetime | None, limit: int | None) -> Page[RejectedView]:
    """The latest ``limit`` rejected messages received at or after ``since``, oldest first."""
    statement = select(_R.id, _R.message_id, _R.event_id, _R.received_at, _R.problems, REPLAYED)
    if since is not None:
        statement = statement.where(_R.received_at >= since)
    with engine.connect() as conn:
        return read_page(conn, statement, [_R.id.desc()], limit, _view)
