"""Accepting a verified SET: each event that ends sessions becomes a normal event,
published like ``POST /v1/events`` (outbox, then broker), with initiator ``system`` and the
transmitter's stream as actor; the SET's jti is recorded against replay, with one
``ssf.received`` audit record.

The order makes a crash harmless. The event id is derived from the issuer, the jti, the
iat and the event type, so a SET the transmitter pushes again after a lost answer publishes
the same id, which the pipeline handles once (``event.duplicate``), while a jti a
transmitter reuses later (after the replay window, with a new iat) is a new event. The jti
is recorded after the events are in the outbox: a crash between the two lets the next push
publish again (harmless), a jti recorded first could lose the events.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from sqlalchemy import delete, select

from orchestrator.audit import emit, write_audit
from orchestrator.event_status import event_states
from orchestrator.publishing import Publisher, validate_events
from orchestrator.store import Database, utcnow
from orchestrator.store.sql import dialect_name, insert_ignore_for
from orchestrator.store.tables import RECEIVED_SETS
from orchestrator.trail import ssf_received
from protocols.ssf.receiving import SetRefusedError
from protocols.ssf.signals import Signal
from schemas import Event
from schemas.errors import InputError

__all__ = ["ReceivedSet", "SetIntake", "event_id_of", "set_key"]

#: The UUID namespace of event ids derived from SETs (uuid5 of issuer, jti, iat and type).
_NAMESPACE: Final = uuid.UUID("6f1c8f0e-4b1e-5a43-9c55-2f0d7c1a5e01")
_SHORT: Final = {"session": "session.revoke", "user": "user.revoke_all"}
#: What the SET member behind each field of the events it becomes is called.
_MEMBERS: Final = {
    "session_id": "subject's session id",
    "user_id": "subject's user id",
    "occurred_at": "event_timestamp (or iat)",
}


def set_key(issuer: str, jti: str) -> str:
    """The replay key of a SET: hex SHA-256 of its issuer and jti (unique per issuer)."""
    return hashlib.sha256(f"{issuer}\n{jti}".encode()).hexdigest()


def event_id_of(issuer: str, jti: str, iat: float, event_type: str) -> str:
    """The id of the event one SET event becomes: the same for every push of the SET, new
    for a jti reused with another ``iat``."""
    return str(uuid.uuid5(_NAMESPACE, f"{issuer}\n{jti}\n{float(iat)!r}\n{event_type}"))


@dataclass(frozen=True, slots=True)
class ReceivedSet:
    """A verified SET of ``stream``: who sent it, its jti and iat, what its events ask."""

    stream: str
    issuer: str
    jti: str
    iat: float
    signals: list[Signal]


class SetIntake:
    """Publishes what verified SETs ask, through ``publisher``, and remembers their jti in
    ``database`` for ``max_age`` after their iat (then a replay is refused as stale)."""

    def __init__(self, database: Database, publisher: Publisher) -> None:
        self._database = database
        self._publisher = publisher

    def accept(self, received: ReceivedSet, max_age: float) -> list[dict[str, Any]]:
        """Publish the events ``received`` asks for (those not known yet) and record it;
        the effects audited. Raise :class:`SetRefusedError` for a replayed jti."""
        key = set_key(received.issuer, received.jti)
        if self._seen(key):
            raise _replayed()
        events, effects = _events(received)
        known = event_states(self._database, [str(e.event_id) for e in events])
        fresh = [e for e in events if str(e.event_id) not in known]
        if fresh:
            self._publisher.enqueue(fresh)
        now = utcnow()
        expires = datetime.fromtimestamp(received.iat, UTC) + timedelta(seconds=max_age + 60)
        row = {
            "key": key,
            "stream": received.stream,
            "jti": received.jti,
            "received_at": now,
            "expires_at": max(expires, now),
        }
        with self._database.begin() as db:
            db.execute(delete(RECEIVED_SETS).where(RECEIVED_SETS.c.expires_at < now))
            inserting = insert_ignore_for(dialect_name(db), RECEIVED_SETS, ["key"])
            if not db.execute(inserting.returning(RECEIVED_SETS.c.key), [row]).first():
                raise _replayed()  # the same SET pushed twice at once: published once
            records = write_audit(
                db, [ssf_received(received.stream, key, received.jti, effects)], at=now
            )
        emit(records)
        return effects

    def _seen(self, key: str) -> bool:
        with self._database() as db:
            found = db.execute(select(RECEIVED_SETS.c.key).where(RECEIVED_SETS.c.key == key))
            return found.first() is not None


def _replayed() -> SetRefusedError:
    return SetRefusedError(
        "invalid_request", "this SET's jti was received before (a replay); it was handled once"
    )


def _occurred(timestamp: float) -> datetime:
    """When the event happened; the signals bound it, this refuses what slipped past."""
    try:
        return datetime.fromtimestamp(timestamp, UTC)
    except (OverflowError, OSError, ValueError):
        raise SetRefusedError(
            "invalid_request",
            f"the SET is not usable: the {_MEMBERS['occurred_at']} is no time an event happened at",
        ) from None


def _events(received: ReceivedSet) -> tuple[list[Event], list[dict[str, Any]]]:
    """The events the signals ask for, and one effect per signal for the audit record."""
    raw: list[dict[str, Any]] = []
    effects: list[dict[str, Any]] = []
    for signal in received.signals:
        effect: dict[str, Any] = {"type": signal.event_type, "action": signal.action}
        if signal.action == "ignore" or signal.target is None:
            effects.append({**effect, "why": signal.why})
            continue
        event_id = event_id_of(received.issuer, received.jti, received.iat, signal.event_type)
        when = _occurred(signal.timestamp or received.iat)
        target = (
            {"session_id": signal.target, "reason": f"ssf: {signal.event_type.rsplit('/')[-1]}"}
            if signal.action == "session"
            else {"user_id": signal.target}
        )
        if signal.action == "session" and signal.user is not None:
            target["user_id"] = signal.user  # the engine ends the session only if it is theirs
        raw.append(
            {
                "type": _SHORT[signal.action],
                "event_id": event_id,
                "occurred_at": when.isoformat(),
                "initiator": "system",
                "actor": received.stream,
                **target,
            }
        )
        effects.append({**effect, "event_id": event_id, "event_type": _SHORT[signal.action]})
    try:
        return validate_events(raw), effects
    except InputError as exc:
        what = "; ".join(f"the {_MEMBERS.get(p.field, p.field)}: {p.message}" for p in exc.problems)
        raise SetRefusedError("invalid_request", f"the SET is not usable: {what}") from None
