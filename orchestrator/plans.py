"""Front-channel stage plans, stored and read; how long the browser gives each step.

See :mod:`schemas.plan` for the contract. A plan is built in the event's first transaction
(:mod:`orchestrator.logout.planning`, before any back-channel request goes out), stored with
a ``plan.built`` audit record, and announced so that
:class:`orchestrator.waiting.LogoutWaiter` returns it at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection

from orchestrator.metrics import observe_plan_build
from orchestrator.store import Database, PlanRow, utcnow
from orchestrator.store.sql import insert_ignore
from orchestrator.store.tables import PLANS
from schemas import LogoutPlan

__all__ = ["PlanTimeouts", "load_plan", "save_plans"]


@dataclass(frozen=True, slots=True)
class PlanTimeouts:
    """Milliseconds the browser gives each iframe, the iframe page, and each native step."""

    frame_ms: int = 5000
    page_ms: int = 10000
    native_ms: int = 10000


def save_plans(conn: Connection, plans: Sequence[LogoutPlan]) -> None:
    """Store the plans (a plan id is written once)."""
    if not plans:
        return
    stored = utcnow()
    for plan in plans:
        observe_plan_build((stored - plan.created_at).total_seconds())
    conn.execute(
        insert_ignore(conn, PLANS, ["plan_id"]),
        [
            {
                "plan_id": plan.plan_id,
                "event_id": plan.event_id,
                "created_at": plan.created_at,
                "body": plan.model_dump(mode="json"),
            }
            for plan in plans
        ],
    )


def load_plan(database: Database, plan_id: str) -> LogoutPlan | None:
    """The stored plan, or None when it is not built (yet)."""
    with database() as db:
        row = db.get(PlanRow, plan_id)
        return None if row is None else LogoutPlan.model_validate(row.body)
