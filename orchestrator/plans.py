"""Front-channel stage plans: built from a logout's front-channel deliveries, stored, read.

See :mod:`schemas.plan` for the contract. A plan is built right after the event's first
transaction (before any back-channel request goes out), stored with a ``plan.built`` audit
record, and announced so that :class:`orchestrator.waiting.LogoutWaiter` returns it at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection

from orchestrator.audit import AuditEntry
from orchestrator.fanout import Work
from orchestrator.store import PlanRow, SessionFactory
from orchestrator.store.sql import insert_ignore
from protocols import Channel
from schemas import (
    AuditType,
    InitiatorResponse,
    LogoutPlan,
    PlanEntry,
    PlanStage,
)
from schemas.errors import DeliveryError
from schemas.plan import IFRAME_STAGE, LOGOUT_STAGE, NATIVE_STAGE

__all__ = ["PlanTimeouts", "build_plan", "load_plan", "plan_entry", "save_plans"]


@dataclass(frozen=True, slots=True)
class PlanTimeouts:
    """Milliseconds the browser gives each iframe, the iframe page, and each native step."""

    frame_ms: int = 5000
    page_ms: int = 10000
    native_ms: int = 10000


def plan_entry(work: Work, timeouts: PlanTimeouts) -> PlanEntry | str:
    """The browser entry of one front-channel delivery, or why it cannot be shown."""
    if work.handler is None:
        return f"no handler for protocol {work.provider.protocol!r} is enabled"
    if not work.provider.enabled or work.provider.settings is None:
        return "provider is disabled or its settings no longer validate"
    try:
        entry = work.handler.frontchannel_entry(work.provider, work.session, work.context)
    except DeliveryError as exc:
        return exc.detail
    native = entry.channel is Channel.FRONTCHANNEL_NATIVE
    return PlanEntry(
        entry_id=work.delivery_id,
        delivery_id=work.delivery_id,
        provider=entry.provider,
        protocol=entry.protocol,
        binding=entry.binding,
        url=entry.url,
        form=dict(entry.form),
        timeout_ms=timeouts.native_ms if native else timeouts.frame_ms,
    )


def build_plan(
    *,
    plan_id: str,
    event_id: str,
    user_id: str | None,
    session_id: str | None,
    entries: Sequence[PlanEntry],
    respond_to: InitiatorResponse | None,
    timeouts: PlanTimeouts,
    now: datetime,
) -> LogoutPlan:
    """Stages in order with explicit indexes: logout 0, iframe 1, native 2 (1 without iframes)."""
    iframes = [e for e in entries if e.binding == "iframe"]
    natives = [e for e in entries if e.binding != "iframe"]
    stages = [PlanStage(index=0, kind=LOGOUT_STAGE)]
    if iframes:
        stages.append(PlanStage(index=len(stages), kind=IFRAME_STAGE, entries=iframes))
    if natives:
        stages.append(PlanStage(index=len(stages), kind=NATIVE_STAGE, entries=natives))
    return LogoutPlan(
        plan_id=plan_id,
        event_id=event_id,
        user_id=user_id,
        session_id=session_id,
        created_at=now,
        stages=stages,
        respond_to=respond_to,
        timeout_ms=timeouts.page_ms,
    )


def save_plans(conn: Connection, plans: Sequence[LogoutPlan]) -> list[AuditEntry]:
    """Store the plans (a plan id is written once) and return their ``plan.built`` entries."""
    if not plans:
        return []
    conn.execute(
        insert_ignore(conn, PlanRow.__table__, ["plan_id"]),  # type: ignore[arg-type]
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
    return [
        AuditEntry(
            key=f"plan.built:{plan.plan_id}",
            type=AuditType.PLAN_BUILT,
            outcome="built",
            event_id=plan.event_id,
            user_id=plan.user_id,
            session_id=plan.session_id,
            detail={
                "plan_id": plan.plan_id,
                "stages": [
                    {"index": s.index, "kind": s.kind, "entries": len(s.entries)}
                    for s in plan.stages
                ],
                "responds_to": plan.respond_to.provider if plan.respond_to else None,
            },
        )
        for plan in plans
    ]


def load_plan(sessions: SessionFactory, plan_id: str) -> LogoutPlan | None:
    """The stored plan, or None when it is not built (yet)."""
    with sessions() as db:
        row = db.get(PlanRow, plan_id)
        return None if row is None else LogoutPlan.model_validate(row.body)
