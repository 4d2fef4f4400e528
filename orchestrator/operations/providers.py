"""Providers for the operator: list them, enable or disable one, and remove one.

``enabled`` is what the engine reads when it sends: a disabled provider's deliveries end
``skipped`` ("provider is disabled") and its front-channel entries are left out of the
plans; its provider sessions still end with their IdP sessions. A provider is removed only
once none of its provider sessions is open and none of its deliveries is still on its way:
then its ended provider sessions and their final deliveries go with it (the audit trail
keeps every record of them). :func:`end_provider_sessions` ends the open ones the normal way:
one ``logout.provider`` (initiator ``admin``) per session, through the outbox, so a worker
ends each and sends its logout.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Connection, Engine, delete, func, select, update

from orchestrator.audit import emit, write_audit
from orchestrator.errors import InputError, Problem
from orchestrator.outbox import add_to_outbox, event_message
from orchestrator.store import OPEN_DELIVERY_STATUSES, utcnow
from orchestrator.store.tables import DELIVERIES, PROVIDER_SESSIONS, PROVIDERS
from orchestrator.trail import provider_changed
from protocols import ProtocolHandler, ProviderInfo
from schemas import AuditType, LogoutProvider
from schemas.hints import did_you_mean

__all__ = [
    "EndReport",
    "ProviderView",
    "end_provider_sessions",
    "list_providers",
    "open_counts",
    "remove_blockers",
    "remove_provider",
    "set_enabled",
]

_P = PROVIDERS.c
_PS = PROVIDER_SESSIONS.c
_D = DELIVERIES.c
#: Ids of the logouts that end a removed provider's sessions: the same each run, so running
#: ``providers remove --end-sessions`` again publishes nothing twice.
_END_NAMESPACE = uuid.UUID("6f1d3c0e-5b7a-4d1e-9a63-2b8f0e4c7a15")


class ProviderView(BaseModel):
    """One provider: ``method`` is how its sessions are logged out (its handler's channel),
    as ``providers list --json`` and ``/v1/providers`` show it."""

    model_config = ConfigDict(frozen=True)

    name: str
    protocol: str
    method: str
    enabled: bool
    open_sessions: int
    full_logout_on_rp_initiated: bool

    def as_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def open_counts(conn: Connection) -> dict[str, int]:
    """Open provider sessions, by provider."""
    rows = conn.execute(
        select(_PS.provider, func.count()).where(_PS.ended_at.is_(None)).group_by(_PS.provider)
    )
    return {str(name): int(count) for name, count in rows}


def list_providers(engine: Engine, handlers: Mapping[str, ProtocolHandler]) -> list[ProviderView]:
    """Every provider, by name, with its method and open provider sessions."""
    with engine.connect() as conn:
        counts = open_counts(conn)
        rows = conn.execute(select(PROVIDERS).order_by(_P.name)).mappings().all()
    return [
        ProviderView(
            name=row["name"],
            protocol=row["protocol"],
            method=_method(row, handlers.get(row["protocol"])),
            enabled=bool(row["enabled"]),
            open_sessions=counts.get(row["name"], 0),
            full_logout_on_rp_initiated=bool(row["full_logout_on_rp_initiated"]),
        )
        for row in rows
    ]


def _method(row: Any, handler: ProtocolHandler | None) -> str:
    if handler is None:
        return "none (no handler enabled)"
    try:
        settings = handler.stored_settings(row["name"], row["settings"])
    except InputError:
        return "none (settings no longer validate)"
    info = ProviderInfo(
        row["name"], row["protocol"], row["enabled"], row["full_logout_on_rp_initiated"], settings
    )
    return handler.channel(info).value


def _known(conn: Connection, name: str) -> Any:
    """The provider row of ``name``, locked; InputError naming the known ones when none."""
    row = (
        conn.execute(select(PROVIDERS).where(_P.name == name).with_for_update()).mappings().first()
    )
    if row is None:
        names = list(conn.scalars(select(_P.name).order_by(_P.name)))
        raise InputError(
            [
                Problem(
                    "",
                    "NAME",
                    f"no provider {name!r}{did_you_mean(name, names)}; see `providers list`",
                )
            ]
        )
    return row


def set_enabled(
    engine: Engine, handlers: Mapping[str, ProtocolHandler], name: str, enabled: bool, actor: str
) -> bool:
    """Enable or disable provider ``name``; False when it already was (nothing written).

    Enabling one whose protocol no enabled handler serves is refused: its logouts could not
    be sent."""
    with engine.begin() as conn:
        row = _known(conn, name)
        if bool(row["enabled"]) is enabled:
            return False
        if enabled and row["protocol"] not in handlers:
            served = ", ".join(sorted(handlers)) or "none"
            raise InputError(
                [
                    Problem(
                        f"provider {name!r}",
                        "protocol",
                        f"no enabled handler serves {row['protocol']!r} (enabled: {served}); "
                        "enable its handler in the protocols setting first",
                    )
                ]
            )
        conn.execute(update(PROVIDERS).where(_P.name == name).values(enabled=enabled))
        kind = AuditType.PROVIDER_ENABLED if enabled else AuditType.PROVIDER_DISABLED
        records = write_audit(conn, [provider_changed(kind, name, actor, {})])  # last
    emit(records)
    return True


@dataclass(frozen=True, slots=True)
class EndReport:
    """The logouts :func:`end_provider_sessions` put in the outbox (publish ``message_ids``
    after it returns); ``full_logout``: they end the users' IdP sessions too."""

    message_ids: list[str]
    full_logout: bool


def end_provider_sessions(
    engine: Engine, namespace: str, name: str, actor: str, *, full_logout: bool = False
) -> EndReport:
    """Put one ``logout.provider`` per open provider session of ``name`` in the outbox.

    Each ends that provider session only (``provider_only``), whatever the provider's
    ``full_logout_on_rp_initiated`` says: removing one application must not log its users
    out everywhere. ``full_logout`` (the operator's explicit choice) ends their IdP
    sessions, and so every provider session of them, too."""
    now = utcnow()
    with engine.begin() as conn:
        _known(conn, name)
        open_ones = conn.execute(
            select(_PS.id, _PS.session_id).where(_PS.provider == name, _PS.ended_at.is_(None))
        ).all()
        events = [
            LogoutProvider(
                event_id=uuid.uuid5(_END_NAMESPACE, f"{name}:{ps_id}"),
                occurred_at=now,
                initiator="admin",
                actor=actor,
                session_id=session_id,
                provider=name,
                full_logout=full_logout,
                provider_only=not full_logout,
            )
            for ps_id, session_id in open_ones
        ]
        messages = [event_message(event, namespace) for event in events]
        add_to_outbox(conn, messages)
        entries = []
        if events:
            detail = {"sessions": len(events), "full_logout": full_logout}
            entries.append(
                provider_changed(AuditType.PROVIDER_SESSIONS_ENDING, name, actor, detail)
            )
        records = write_audit(conn, entries, at=now)  # last
    emit(records)
    return EndReport([m.message_id for m in messages], full_logout)


def remove_blockers(engine: Engine, name: str) -> tuple[int, int]:
    """What keeps provider ``name`` from being removed: its open provider sessions and its
    deliveries still on their way."""
    with engine.connect() as conn:
        return _blockers(conn, name)


def _blockers(conn: Connection, name: str) -> tuple[int, int]:
    sessions = select(_PS.id).where(_PS.provider == name)
    open_sessions = conn.scalar(
        select(func.count()).where(_PS.provider == name, _PS.ended_at.is_(None))
    )
    on_the_way = conn.scalar(
        select(func.count()).where(
            _D.provider_session_id.in_(sessions),
            _D.status.in_([s.value for s in OPEN_DELIVERY_STATUSES]),
        )
    )
    return int(open_sessions or 0), int(on_the_way or 0)


def remove_provider(engine: Engine, name: str, actor: str) -> dict[str, int]:
    """Remove provider ``name`` with its ended provider sessions and their deliveries; the
    counts removed. Refused (:class:`InputError`, naming the counts and the way on) while a
    provider session is open or a delivery is on its way."""
    with engine.begin() as conn:
        _known(conn, name)
        _refuse_removal(name, *_blockers(conn, name))
        sessions = select(_PS.id).where(_PS.provider == name)
        removed = {
            "deliveries": conn.execute(
                delete(DELIVERIES).where(_D.provider_session_id.in_(sessions))
            ).rowcount,
            "provider_sessions": conn.execute(
                delete(PROVIDER_SESSIONS).where(_PS.provider == name)
            ).rowcount,
        }
        conn.execute(delete(PROVIDERS).where(_P.name == name))
        entry = provider_changed(AuditType.PROVIDER_REMOVED, name, actor, removed)
        records = write_audit(conn, [entry])  # last
    emit(records)
    return removed


def _refuse_removal(name: str, open_sessions: int, on_the_way: int) -> None:
    problems = []
    if open_sessions:
        problems.append(
            Problem(
                f"provider {name!r}",
                "",
                f"{open_sessions} provider session(s) are open; add --end-sessions to log them "
                "out first (one logout.provider each), or wait until they end",
            )
        )
    if on_the_way:
        problems.append(
            Problem(
                f"provider {name!r}",
                "",
                f"{on_the_way} delivery(ies) are still on their way; wait until they are final "
                f"(`deliveries list --provider {name}`)",
            )
        )
    if problems:
        raise InputError(problems)
