"""Asking for a new attempt of failed deliveries (``deliveries retry``).

A retry goes the way every retry goes: the delivery is made due again (``retrying``, due
now) and a message for the ``deliver`` actor is written to the outbox, in the transaction
that writes its ``delivery.retry_requested`` record. A worker then claims it, sends it once
and records the attempt (``delivery.succeeded`` / ``.failed`` / ``.retrying``) as for any
retry; a transient failure is retried within ``delivery_max_attempts`` and
``delivery_max_age`` as usual (past them, the attempt is the last). A delivery that
succeeded, or was skipped, is never sent again; one pending or retrying is already on its
way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, select, update

from orchestrator.audit import emit, write_audit
from orchestrator.errors import InputError, Problem
from orchestrator.operations.deliveries import COLUMNS, DeliveryQuery, DeliveryView, view
from orchestrator.outbox import OutboxMessage, add_to_outbox
from orchestrator.queues import DELIVER_ACTOR, deliveries_queue
from orchestrator.store import OPEN_DELIVERY_STATUSES, DeliveryStatus, utcnow
from orchestrator.store.tables import DELIVERIES
from orchestrator.trail import delivery_retry_requested

__all__ = ["RETRY_BATCH", "RetryReport", "request_retries"]

#: Deliveries one ``retry --failed`` takes at most; the next run takes the rest.
RETRY_BATCH = 1000


@dataclass(frozen=True, slots=True)
class RetryReport:
    """What a retry request did: the deliveries made due again (their outbox message ids),
    and those already on their way (pending or retrying), left alone."""

    retried: list[DeliveryView] = field(default_factory=list)
    in_flight: list[DeliveryView] = field(default_factory=list)
    message_ids: list[str] = field(default_factory=list)


def request_retries(
    engine: Engine,
    namespace: str,
    actor: str,
    *,
    ids: Sequence[str] = (),
    failed: DeliveryQuery | None = None,
) -> RetryReport:
    """Make the deliveries ``ids`` (or the failed ones ``failed`` selects, at most
    :data:`RETRY_BATCH`) due again, in one transaction with their audit records and outbox
    messages; publish the returned message ids after it.

    An id that is unknown, succeeded or skipped refuses the whole request
    (:class:`InputError`, naming each): nothing is applied.
    """
    now = utcnow()
    with engine.begin() as conn:
        rows = _chosen(conn, ids, failed)
        _refuse_final(ids, rows)
        views = [view(row) for row in rows]
        retried = [v for v in views if v.status == DeliveryStatus.FAILED]
        in_flight = [v for v in views if v.status in OPEN_DELIVERY_STATUSES]
        if retried:
            conn.execute(
                update(DELIVERIES)
                .where(
                    DELIVERIES.c.id.in_([v.id for v in retried]),
                    DELIVERIES.c.status == DeliveryStatus.FAILED.value,
                )
                .values(
                    status=DeliveryStatus.RETRYING.value,
                    next_attempt_at=now,
                    completed_at=None,
                    updated_at=now,
                )
            )
        messages = [_retry_message(v, namespace) for v in retried]
        add_to_outbox(conn, messages)
        entries = [delivery_retry_requested(_record_of(v), actor) for v in retried]
        records = write_audit(conn, entries, at=now)  # last
    emit(records)
    return RetryReport(retried, in_flight, [m.message_id for m in messages])


def _chosen(conn: Connection, ids: Sequence[str], failed: DeliveryQuery | None) -> list[Any]:
    """The rows asked for, locked (in id order, as every writer of deliveries locks them)."""
    statement = select(*COLUMNS).order_by(DELIVERIES.c.id).with_for_update()
    if failed is not None:
        chosen = statement.where(
            *failed.where(), DELIVERIES.c.status == DeliveryStatus.FAILED.value
        ).limit(RETRY_BATCH)
    else:
        chosen = statement.where(DELIVERIES.c.id.in_(sorted(set(ids))))
    return list(conn.execute(chosen).mappings())


def _refuse_final(ids: Sequence[str], rows: Sequence[Any]) -> None:
    found = {row["id"]: row for row in rows}
    problems = []
    for delivery_id in dict.fromkeys(ids):
        row = found.get(delivery_id)
        if row is None:
            message = "no such delivery; take the id from `deliveries list`"
        elif row["status"] == DeliveryStatus.SUCCEEDED:
            message = (
                f"succeeded ({row['provider']}, attempt {row['attempts']}); "
                "a delivery that succeeded is never sent again"
            )
        elif row["status"] == DeliveryStatus.SKIPPED:
            message = (
                f"skipped ({row['last_error'] or 'not sent by the worker'}); "
                "only a failed delivery can be retried"
            )
        else:
            continue
        problems.append(Problem(delivery_id, "", message))
    if problems:
        raise InputError(problems)


def _retry_message(view: DeliveryView, namespace: str) -> OutboxMessage:
    """The ``deliver`` message of one requested retry (its id names the attempts so far, so
    one request is one message)."""
    return OutboxMessage(
        message_id=f"retry:{view.id}:{view.attempts}",
        event_id=view.event_id,
        queue=deliveries_queue(namespace),
        actor=DELIVER_ACTOR,
        payload=view.id,
    )


def _record_of(view: DeliveryView) -> dict[str, Any]:
    return view.model_dump()
