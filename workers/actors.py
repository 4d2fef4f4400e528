"""The actors: ``handle_event`` for published events, ``deliver`` for scheduled retries.

Messages carry the event as published (validated by the worker) or a delivery id; the
actors reload state from the database, so a redelivered message is harmless.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import dramatiq
import structlog
from dramatiq.middleware import CurrentMessage

from orchestrator.errors import LogoutError
from orchestrator.expiry import ExpirySweeper, SweepReport
from orchestrator.logout import HandleResult
from orchestrator.outbox import event_message
from orchestrator.publishing import Publisher
from orchestrator.queues import DELIVER_ACTOR, HANDLE_EVENT_ACTOR, deliveries_queue, events_queue
from orchestrator.recovery import RecoveryReport, recover
from orchestrator.rejection import Rejection, record_rejections
from orchestrator.relay import BrokerSender, OutboxRelay
from orchestrator.runtime import Runtime
from orchestrator.store.sql import engine_of
from schemas import Event
from schemas.redaction import redact
from workers.batching import EventBatcher
from workers.outage import Guard, Health, unguarded
from workers.screening import Screened

__all__ = ["Actors", "declare_actors"]

_log = structlog.get_logger("logout.pipeline")

#: Unexpected errors (a bug) are retried by dramatiq's Retries middleware with its backoff;
#: an outage of the database or broker is waited out in place (``Health``), and delivery
#: failures never reach it: the fan-out records and schedules them.
_MAX_RETRIES = 10
#: A refused copy of a held event's message comes back this long after the lease's end.
_BUSY_MARGIN = timedelta(seconds=1)
#: dramatiq's default time limit (10 minutes) would interrupt a message waiting out a
#: database or broker outage, and spend a retry; each step of handling has its own bound
#: (delivery timeouts), so this only catches a hung thread.
_TIME_LIMIT_MS = 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class Actors:
    handle_event: dramatiq.Actor[[Any], None]
    deliver: dramatiq.Actor[[str], None]
    publisher: Publisher
    relay: OutboxRelay
    runtime: Runtime
    sender: BrokerSender

    def schedule(self, delivery_id: str, delay: float) -> None:
        """Try ``delivery_id`` again in ``delay`` seconds, never sooner.

        Rounded up to the broker's milliseconds: a message that came early would only be
        put back until its delivery is due.
        """
        self.deliver.send_with_options(args=(delivery_id,), delay=math.ceil(delay * 1000))

    def republish(self, event: Event, message_id: str) -> None:
        """Enqueue a stuck event again under its first message id (its row in ``events`` is
        its record: no outbox row)."""
        self.sender(event_message(event, self.runtime.settings.namespace, message_id))

    def sweep_expired(self) -> SweepReport:
        """Claim each session past its idle or absolute limit (its ``session.expired`` goes to
        the outbox), then publish the outbox."""
        settings = self.runtime.settings
        report = ExpirySweeper(
            self.runtime.database,
            self.runtime.policy,
            namespace=settings.namespace,
            batch=settings.expiry_batch,
            max_per_sweep=settings.expiry_max_per_sweep,
        ).sweep()
        self.relay.run()
        return report

    def recover(self) -> RecoveryReport:
        """Re-publish stuck events, re-schedule overdue deliveries, publish the outbox (and
        send again what the broker lost)."""
        grace = self.runtime.settings.recovery_grace
        report = recover(
            self.runtime.database,
            grace=grace,
            republish=self.republish,
            reschedule=self.schedule,
        )
        self.relay.recover(grace)
        self.relay.run()
        return report


def _last_try(message: dramatiq.Message[Any]) -> bool:
    """Whether this run of ``message`` is its last: dramatiq counts the runs that failed in
    ``retries`` and dead-letters the message once a run fails with :data:`_MAX_RETRIES`
    behind it."""
    retries = message.options.get("retries", 0)
    return isinstance(retries, int) and retries >= _MAX_RETRIES


def _given_up(event: Any, message: dramatiq.Message[Any], exc: Exception) -> Rejection:
    """An event whose handling raised on every try (a bug, not an outage: the guard waits
    those out), recorded as rejected rather than left to the dead-letter queue, where no
    status, audit record or metric would show it: the outbox stops sending it again, and
    ``events replay`` publishes it anew once the cause is fixed. Only the exception's type
    is kept (its text could quote the event); the worker's log has each try."""
    tries = _MAX_RETRIES + 1
    problem = (
        f"handling: failed on each of its {tries} tries with an internal error "
        f"({type(exc).__name__}); the worker's log has each try under message "
        f"{message.message_id}; once the cause is fixed, publish it again with `events replay`"
    )
    _log.error("event given up", error=type(exc).__name__, tries=tries, exc_info=exc)
    event_id = event.get("event_id") if isinstance(event, dict) else None
    return Rejection(
        message_id=message.message_id,
        payload=json.dumps(redact(event), default=str),
        problems=[problem],
        event_id=str(event_id) if event_id is not None else None,
    )


def declare_actors(
    broker: dramatiq.Broker, runtime: Runtime, health: Health | None = None
) -> Actors:
    """Declare both actors on ``broker``, bound to ``runtime``.

    With ``health`` (a worker process), work the database or broker failed waits for it
    and runs again, and a Redis broker screens what it fetches (see
    :mod:`workers.redis_broker`).
    """
    namespace = runtime.settings.namespace
    guard: Guard = health.guard if health is not None else unguarded
    scheduler: list[Actors] = []

    def schedule(delivery_id: str, delay: float) -> None:
        scheduler[0].schedule(delivery_id, delay)

    publisher = Publisher(broker, runtime.database, namespace)
    sender = BrokerSender(broker)
    relay = runtime.relay(sender)
    # Sessions the per-user limit ends: to the outbox, published right after the commit.
    activity = runtime.activity(relay.run)
    logouts = runtime.logout_engine(schedule, activity.handle)  # events and retries share it
    batcher = EventBatcher(
        logouts,
        runtime.settings.max_batch_events,
        runtime.settings.batch_concurrency,
        guard,
    )

    engine = engine_of(runtime.database)

    def handle_event(event: Any) -> None:
        message = CurrentMessage.get_current_message()
        if message is None:  # pragma: no cover - CurrentMessage is always installed
            raise LogoutError("handle_event called outside a worker")
        try:
            result = batcher.handle(event, message.message_id)
        except Exception as exc:
            if not _last_try(message):
                raise  # dramatiq's Retries middleware tries it again later
            rejection = _given_up(event, message, exc)
            guard(lambda: record_rejections(engine, [rejection]))
            return
        if result is HandleResult.BUSY:
            # A worker holds the event: this copy comes back when that lease ends unless it is
            # renewed (same message id, no retry spent), and is then resumed or a duplicate. A
            # dead worker's lease is not renewed, so its event goes on one lease after its last
            # renewal, not a whole lease after its message came back.
            left = guard(lambda: logouts.lease_left(str(event["event_id"]))) + _BUSY_MARGIN
            broker.enqueue(message, delay=math.ceil(left.total_seconds() * 1000))

    def deliver(delivery_id: str) -> None:
        guard(lambda: logouts.retry([delivery_id]))

    if isinstance(broker, Screened):

        def reject(rejections: Sequence[Rejection]) -> None:
            guard(lambda: record_rejections(engine, rejections))

        broker.health = health
        broker.rejecter = reject

    actors = Actors(
        handle_event=dramatiq.actor(
            broker=broker,
            actor_name=HANDLE_EVENT_ACTOR,
            queue_name=events_queue(namespace),
            max_retries=_MAX_RETRIES,
            time_limit=_TIME_LIMIT_MS,
        )(handle_event),
        deliver=dramatiq.actor(
            broker=broker,
            actor_name=DELIVER_ACTOR,
            queue_name=deliveries_queue(namespace),
            max_retries=_MAX_RETRIES,
            time_limit=_TIME_LIMIT_MS,
        )(deliver),
        publisher=publisher,
        relay=relay,
        runtime=runtime,
        sender=sender,
    )
    scheduler.append(actors)
    return actors
