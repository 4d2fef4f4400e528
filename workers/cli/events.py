"""``events``: what the workers refused, and replaying it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from workers.cli.base import (
    Actor,
    console,
    listing_options,
    page_limit,
    print_page,
    settings_of,
    since_of,
)
from workers.cli.root import main

if TYPE_CHECKING:
    from orchestrator.operations import RejectedView

_HEADER = ("id", "received", "event", "message", "replayed as", "problems")


@main.group()
def events() -> None:
    """Events the workers refused, and replaying them."""


@events.command("rejected", logs=False)
@click.option("--since", help="Only those received at or after this time (or date).")
@listing_options
@click.pass_context
def events_rejected(
    ctx: click.Context, since: str | None, limit: int | None, as_json: bool
) -> None:
    """List rejected events with their problems, oldest first (ID is what replay takes).

    Only reads: never migrates (a missing or older schema exits 7: run db upgrade).
    """
    from orchestrator.operations import list_rejected
    from orchestrator.store.reading import reading_engine

    after = since_of(since)
    settings = settings_of(ctx)
    engine = reading_engine(settings.effective_database_url, settings.origin("database_url"))
    try:
        page = list_rejected(engine, after, page_limit(limit, as_json))
    finally:
        engine.dispose()
    print_page(page, as_json, _HEADER, _row, "rejected events")


def _row(v: RejectedView) -> tuple[str, ...]:
    return (
        str(v.id),
        v.received_at.strftime("%Y-%m-%d %H:%M:%S"),
        (v.event_id or "")[:8],
        v.message_id,
        (v.replayed_as or "")[:8],
        "; ".join(v.problems),
    )


@events.command("replay")
@click.argument("rejected_id", metavar="ID", type=int)
@click.option(
    "--actor",
    type=Actor(),
    required=True,
    help="Who replays it (recorded in the audit trail).",
)
@click.pass_context
def events_replay(ctx: click.Context, rejected_id: int, actor: str) -> None:
    """Validate rejected event ID again; publish it when it passes.

    It goes the normal way (the outbox, then a worker), linked to the rejection by an
    event.replayed record (rejected_record: ID). Still invalid: its problems, exit 2.
    Stored with redacted values ([redacted]: a token, a device id): refused, exit 2, naming
    them; publish the event again instead. An event replayed before is not published again.
    """
    from orchestrator.operations import replay_rejected
    from workers.relaying import command_runtime, publish_written

    settings = settings_of(ctx)
    runtime = command_runtime(settings)
    try:
        report = replay_rejected(runtime.engine, settings.namespace, rejected_id, actor)
        if not report.already:
            publish_written(settings, runtime, [report.message_id])
    finally:
        runtime.close()
    if report.already:
        console().print(
            f"rejected event {rejected_id} was replayed before, as {report.event_type} "
            f"{report.event_id}; nothing published",
            markup=False,
        )
    else:
        console().print(
            f"replayed: {report.event_type} {report.event_id} (message {report.message_id})",
            markup=False,
        )
