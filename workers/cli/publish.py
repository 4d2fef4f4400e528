"""``publish``: validate events and put them on the broker (or handle them in-process)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import closing
from typing import TYPE_CHECKING

import click

from schemas.errors import InputError, Problem
from workers.cli.base import Seconds, console, read_input, settings_of
from workers.cli.root import main
from workers.exit_codes import ExitCode

if TYPE_CHECKING:
    from orchestrator.runtime import Runtime
    from orchestrator.settings import Settings
    from orchestrator.validation import EventCheck
    from protocols import ProtocolHandler
    from schemas import Event


@main.command()
@click.argument("source", default="-")
@click.option(
    "--wait",
    type=Seconds(zero=True),  # 0 is named with the input's problems (see _WAIT_PROBLEM)
    default=30.0,
    show_default=True,
    help="memory:// only: seconds to wait for the events, then for delivery retries "
    "(> 0, at most a day).",
)
@click.pass_context
def publish(ctx: click.Context, source: str, wait: float) -> None:
    """Validate and publish events from SOURCE (a file of one JSON object or JSON lines, or -).

    Nothing of a batch is published when any event is invalid; every problem (each bad
    line, and --wait) is named at once. With broker_url memory:// the events are handled
    right here, in-process, after checking that the directories it writes to are writable.
    """
    from orchestrator.validation import parse_event_lines
    from workers.broker import is_in_process
    from workers.progress import MAX_LISTED_ON_TERMINAL, ProgressBar, Reported, publish_summary

    settings = settings_of(ctx)
    handlers = None
    problems = []
    check = None
    if is_in_process(settings):
        from orchestrator.handlers import load_handlers, start_handlers

        handlers = load_handlers(settings)
        start_handlers(settings, handlers)
        if wait <= 0:
            problems.append(_WAIT_PROBLEM)
        check = _served_bindings(settings)
    with ProgressBar() as progress:
        try:
            events = parse_event_lines(read_input(source), progress, check)
        except InputError as exc:
            raise InputError([*exc.problems, *problems]) from exc
        if problems:
            raise InputError(problems)
        refused = publish_events(settings, Reported(events, progress, "publishing"), wait, handlers)
    if not (progress.shown and len(events) > MAX_LISTED_ON_TERMINAL):
        for event in events:
            console().print(f"published {event.type} {event.event_id}", markup=False)
    console().print(publish_summary(len(events), progress.elapsed), markup=False)
    if refused:  # memory:// only: a worker elsewhere records them the same way, later
        for problem in refused:
            console(stderr=True).print(str(problem), markup=False)
        ctx.exit(int(ExitCode.INPUT))


def _served_bindings(settings: Settings) -> EventCheck:
    """What the in-process worker would refuse of a valid event: a ``session.started``
    binding mode no configured GeoIP database serves (checked with the rest of the input)."""
    from orchestrator.binding import unserved_modes

    def check(event: Event) -> list[tuple[str, str]]:
        if event.type != "session.started":
            return []
        return unserved_modes(
            event.network_binding,
            event.geoip_binding,
            has_asn_database=settings.geoip_asn_db is not None,
            has_city_database=settings.geoip_city_db is not None,
        )

    return check


#: ``publish --wait 0`` on ``memory://``: the events could not be handled.
_WAIT_PROBLEM = Problem(
    "--wait",
    "",
    "with broker_url memory:// the events are handled inside this command, so it must wait "
    "for them: give --wait seconds > 0 (default 30), or publish to redis:// or amqp:// for "
    "a worker",
)


def publish_events(
    settings: Settings,
    events: Sequence[Event],
    wait: float = 30.0,
    handlers: Mapping[str, ProtocolHandler] | None = None,
) -> list[Problem]:
    """Publish on the configured broker; with memory:// handle them here, in-process, and
    return what the worker refused of them (recorded as ``event.rejected``).

    Loses nothing: each event is recorded in the outbox as it is enqueued (so a broker that
    loses it, or fails part-way, leaves it to the workers' relay and recovery), an unreachable
    broker is found before anything is recorded, and with memory:// the command returns only
    once every event was handled (else it says so).
    """
    from workers.broker import build_broker, check_broker, is_in_process

    if not is_in_process(settings):
        from orchestrator.publishing import Publisher
        from orchestrator.runtime import Runtime
        from schemas.errors import BrokerUnavailableError
        from workers.relaying import kept_message

        runtime = Runtime.start(settings, handlers={})
        try:
            broker = build_broker(settings)
            try:
                try:
                    check_broker(broker, settings)
                except BrokerUnavailableError as exc:
                    raise BrokerUnavailableError(f"{exc}. Nothing was published") from exc
                report = Publisher(broker, runtime.database, settings.namespace).enqueue(events)
            finally:
                broker.close()
        finally:
            runtime.close()
        if report.error is not None:
            raise BrokerUnavailableError(kept_message(report))
        return []
    if wait <= 0:
        raise InputError([_WAIT_PROBLEM])
    from orchestrator.runtime import Runtime
    from workers.process import drain, embedded

    runtime = Runtime.start(settings, handlers=handlers)
    with closing(runtime), embedded(settings, runtime) as actors:
        actors.publisher.enqueue(events)
        again = f"publish the same input again with a longer --wait than {wait:g}"
        if not drain(actors, wait, again):
            console(stderr=True).print(
                "some deliveries are still retrying; they resume on the next run"
            )
        return _refused_by_the_worker(actors.runtime, [str(e.event_id) for e in events])


def _refused_by_the_worker(runtime: Runtime, event_ids: Sequence[str]) -> list[Problem]:
    """What the in-process worker refused of ``event_ids`` (valid as events, refused by what
    handles them, e.g. a binding no database serves): each recorded as ``event.rejected``."""
    from sqlalchemy import select

    from orchestrator.store import RejectedEvent

    with runtime.database() as db:
        rows = db.execute(
            select(RejectedEvent.event_id, RejectedEvent.problems).where(
                RejectedEvent.event_id.in_(event_ids)
            )
        ).all()
    return [
        Problem(f"event {event_id}", "", f"refused by the worker (recorded): {problem}")
        for event_id, problems in rows
        for problem in problems or ["refused"]
    ]
