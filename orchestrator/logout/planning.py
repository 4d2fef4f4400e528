"""Stage plans: the front-channel deliveries of a logout, in the order the browser shows
them, built in the event's first transaction (before any back-channel request, so the
browser can start while the RPs are being notified) and stored with ``plan.built``.

Entries that cannot be built are left out and named in ``plan.built``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import structlog
from sqlalchemy import Connection

import orchestrator.store.statements as sql
from orchestrator.audit import AuditEntry
from orchestrator.logout.batch import Begun, Work
from orchestrator.plans import PlanTimeouts, save_plans
from orchestrator.trail import plan_built
from protocols import Channel
from schemas import (
    InitiatorResponse,
    LogoutPlan,
    LogoutProvider,
    PlanEntry,
    PlanStage,
)
from schemas.errors import DeliveryError
from schemas.plan import IFRAME_STAGE, LOGOUT_STAGE, NATIVE_STAGE

__all__ = ["build_plan", "plan", "plan_entry"]

_log = structlog.get_logger("logout.pipeline")


def plan(
    conn: Connection, begun: Sequence[Begun], timeouts: PlanTimeouts, now: datetime
) -> tuple[list[LogoutPlan], list[AuditEntry]]:
    """Build and store the stage plan of each logout that asks for one; returns the plans
    and their ``plan.built`` entries."""
    plans: list[LogoutPlan] = []
    left_out: dict[str, list[dict[str, str]]] = {}
    for item in begun:
        logout = item.logout
        if logout.plan_id is None:
            continue
        entries: list[PlanEntry] = []
        for work in item.works:
            if not _in_browser(work):
                continue
            entry = plan_entry(work, timeouts)
            if isinstance(entry, str):
                reason = {"provider": work.provider.name, "reason": entry}
                left_out.setdefault(logout.plan_id, []).append(reason)
            else:
                entries.append(entry)
        plans.append(
            build_plan(
                plan_id=logout.plan_id,
                event_id=logout.event_id,
                user_id=item.ended.user_id,
                session_id=logout.session_id,
                entries=entries,
                respond_to=_respond_to(conn, logout.event),
                timeouts=timeouts,
                now=now,
            )
        )
    save_plans(conn, plans)
    return plans, [plan_built(p, left_out.get(p.plan_id)) for p in plans]


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
    except Exception as exc:  # noqa: BLE001 - a handler's bug leaves out its entry only
        return _handler_failed(work, exc)
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


def _handler_failed(work: Work, exc: Exception) -> str:
    """Why an entry whose handler raised something else than a DeliveryError is left out:
    only the exception's type is logged and said (its message may hold an identifier)."""
    kind = type(exc).__name__
    _log.warning(
        "protocol handler raised an unexpected exception; its plan entry is left out",
        delivery_id=work.delivery_id,
        protocol=work.provider.protocol,
        error=kind,
    )
    return f"the {work.provider.protocol!r} protocol handler failed building the entry ({kind})"


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


def _in_browser(work: Work) -> bool:
    """A delivery carried out by the browser (front-channel), not by the worker."""
    if work.handler is None or work.provider.settings is None:
        return False
    return work.handler.channel(work.provider) is not Channel.BACKCHANNEL


def _respond_to(conn: Connection, event: object) -> InitiatorResponse | None:
    """Whom the plan answers: the provider that started the logout, when it asked."""
    if not isinstance(event, LogoutProvider) or event.in_response_to is None:
        return None
    protocol = conn.scalar(sql.PROVIDER_PROTOCOL, {"b_provider": event.provider})
    if protocol is None:
        return None
    return InitiatorResponse(
        provider=event.provider,
        protocol=protocol,
        in_response_to=event.in_response_to,
        relay_state=event.relay_state,
    )
