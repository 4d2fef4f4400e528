"""``events``: what the workers refused, and replaying it."""

from __future__ import annotations

import click

from workers.cli.base import console, cut_note, print_json_lines, print_table, settings_of, since_of
from workers.cli.root import main

_HEADER = ("id", "received", "event", "message", "replayed as", "problems")


@main.group()
def events() -> None:
    """Events the workers refused, and replaying them."""


@events.command("rejected", logs=False)
@click.option("--since", help="Only those received at or after this time (or date).")
@click.option(
    "--limit",
    type=click.IntRange(1),
    default=None,
    help="At most this many, the latest (default: 1000 for the table, all with --json).",
)
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of a table.")
@click.pass_context
def events_rejected(
    ctx: click.Context, since: str | None, limit: int | None, as_json: bool
) -> None:
    """List rejected events with their problems, oldest first (ID is what replay takes).

    Only reads: never migrates (a missing or older schema exits 7: run db upgrade).
    """
    from orchestrator.operations import list_rejected
    from orchestrator.operations.page import TABLE_LIMIT
    from orchestrator.runtime import Runtime

    after = since_of(since)
    runtime = Runtime.for_reading(settings_of(ctx))
    try:
        shown = limit if limit is not None or as_json else TABLE_LIMIT
        page = list_rejected(runtime.engine, after, shown)
    finally:
        runtime.close()
    if as_json:
        print_json_lines(view.as_json() for view in page.items)
    else:
        rows = (
            (
                str(v.id),
                v.received_at.strftime("%Y-%m-%d %H:%M:%S"),
                (v.event_id or "")[:8],
                v.message_id,
                (v.replayed_as or "")[:8],
                "; ".join(v.problems),
            )
            for v in page.items
        )
        print_table(_HEADER, rows)
    cut_note(len(page.items), page.total, "rejected events")


@events.command("replay")
@click.argument("rejected_id", metavar="ID", type=int)
@click.option("--actor", required=True, help="Who replays it (recorded in the audit trail).")
@click.pass_context
def events_replay(ctx: click.Context, rejected_id: int, actor: str) -> None:
    """Validate rejected event ID again; publish it when it passes.

    It goes the normal way (the outbox, then a worker), linked to the rejection by an
    event.replayed record (rejected_record: ID). Still invalid: its problems, exit 2. An
    event replayed before is not published again.
    """
    from orchestrator.operations import replay_rejected
    from orchestrator.runtime import Runtime
    from workers.relaying import publish_written

    settings = settings_of(ctx)
    runtime = Runtime.start(settings)  # with memory:// its worker sends: handlers
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
