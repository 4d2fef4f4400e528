"""Replaying a rejected event (``events replay``).

A replay validates the stored payload again with today's contract. One that passes is
published the normal way, through the outbox under the message id ``replay:<id>``, in the
transaction that writes its ``event.replayed`` record (the event id, and ``rejected_record``
linking it to the rejection); a worker then handles it like any event (a logout whose
``event_id`` was handled already leaves ``event.duplicate``). A replay is done once: the
record's key is the rejection's id, and a second replay publishes nothing. One that still
fails is refused with its problems (:class:`InputError`), and nothing is written.

A rejection is stored redacted (:func:`~schemas.redaction.redact`: secret-named values and
JWTs are ``[redacted]``), so a payload with masked values is not the event that was
published: its replay is refused, naming each masked field; the way on is to publish the
event again from its source.

What a worker refuses beyond the contract (a binding mode no GeoIP database serves) is
refused by the worker again, as a new rejection of the replay's message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select

from orchestrator.audit import emit, write_audit
from orchestrator.errors import InputError, Problem
from orchestrator.operations.rejected import REPLAYED
from orchestrator.outbox import add_to_outbox, event_message
from orchestrator.store.tables import REJECTED_EVENTS
from orchestrator.trail import event_replayed
from orchestrator.validation import parse_event
from schemas import Event
from schemas.redaction import REDACTED, redacted_paths

__all__ = ["MAX_REJECTED_ID", "ReplayReport", "replay_rejected"]

#: The highest id ``rejected_events.id`` (an INTEGER, 32 bits on PostgreSQL) can hold; ids
#: start at 1.
MAX_REJECTED_ID = 2**31 - 1


@dataclass(frozen=True, slots=True)
class ReplayReport:
    """The event a replay published (``message_id``: its outbox message, to publish after
    the commit), or, when it was replayed before, that earlier replay (``already``)."""

    event_id: str
    event_type: str
    message_id: str
    already: bool


def replay_rejected(engine: Engine, namespace: str, rejected_id: int, actor: str) -> ReplayReport:
    """Validate rejection ``rejected_id`` again; publish it through the outbox when it passes
    (see the module docstring). Publish the report's ``message_id`` after it returns."""
    if not 1 <= rejected_id <= MAX_REJECTED_ID:  # no such row; the driver would overflow
        raise _no_such(rejected_id)
    with engine.begin() as conn:
        row = (
            conn.execute(
                select(REJECTED_EVENTS, REPLAYED).where(REJECTED_EVENTS.c.id == rejected_id)
            )
            .mappings()
            .first()
        )
        if row is None:
            raise _no_such(rejected_id)
        payload = _payload(row["payload"])
        event = _replayable(rejected_id, payload)
        message_id = f"replay:{rejected_id}"
        if row["replayed_as"] is not None:
            return ReplayReport(row["replayed_as"], event.type, message_id, already=True)
        add_to_outbox(conn, [event_message(event, namespace, message_id)])
        entry = event_replayed(dict(row), event, message_id, actor)
        records = write_audit(conn, [entry])  # last
    emit(records)
    return ReplayReport(str(event.event_id), event.type, message_id, already=False)


def _no_such(rejected_id: int) -> InputError:
    return InputError(
        [Problem("", "id", f"no rejected event {rejected_id}; see `events rejected`")]
    )


def _replayable(rejected_id: int, payload: Any) -> Event:
    """The stored payload as an event today's contract accepts. Refused (InputError) naming
    each field stored redacted (replaying ``[redacted]`` would publish a mask as the real
    value) and each other problem the contract finds, all at once."""
    masked = redacted_paths(payload)
    message = (
        f"stored redacted ({REDACTED}), so rejected event {rejected_id} cannot be replayed "
        "as published; publish the event again from its source (`publish`)"
    )
    problems = [Problem("", path or "payload", message) for path in masked]
    try:
        event = parse_event(payload, f"rejected event {rejected_id}")
    except InputError as exc:
        if not problems:
            raise
        # A masked value may fail the contract too: its redaction is the problem to name.
        problems += [p for p in exc.problems if p.field not in masked]
    if problems:
        raise InputError(problems)
    return event


def _payload(text: str) -> Any:
    """The stored payload as JSON data (the text itself when it is none: the problem then
    says what it is)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return text
