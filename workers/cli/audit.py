"""``audit``: the audit trail."""

from __future__ import annotations

import click

from workers.cli.base import settings_of
from workers.cli.root import main


@main.group()
def audit() -> None:
    """The audit trail."""


@audit.command("list", logs=False, teardown=False)
@click.option(
    "--user",
    "user_id",
    help="Only this user's records, with the event.received/.duplicate of its events.",
)
@click.option("--session", "session_id", help="Only this IdP session's records.")
@click.option("--event", "event_id", help="Only this event's records: its id or a unique start.")
@click.option(
    "--type",
    "record_type",
    help="Only records of this type (delivery.failed) or family (delivery.).",
)
@click.option(
    "--since",
    help="Only records at or after this time: as --json or the table prints it, or a date.",
)
@click.option(
    "--limit",
    type=click.IntRange(1),
    default=None,
    help="At most this many: the latest, or the first after --after "
    "(default: 1000 for the table, every record with --json).",
)
@click.option("--after", help="Only records written after this record id (paging; from --json).")
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of a table.")
@click.pass_context
def audit_list(
    ctx: click.Context,
    user_id: str | None,
    session_id: str | None,
    event_id: str | None,
    record_type: str | None,
    since: str | None,
    limit: int | None,
    after: str | None,
    as_json: bool,
) -> None:
    """List audit records, oldest first: the latest LIMIT, or every one with --json.

    When a limit cuts the output, stderr says how many matched and how to get the rest.
    Only reads: never migrates (a missing or older schema exits 7: run db upgrade).
    """
    from workers.audit_list import AuditListOptions, list_audit

    options = AuditListOptions(
        user_id, session_id, event_id, record_type, since, limit, after, as_json
    )
    list_audit(settings_of(ctx), options)


@audit.command("show", logs=False, teardown=False)
@click.argument("event_id")
@click.option("--json", "as_json", is_flag=True, help="The timeline as one JSON document.")
@click.pass_context
def audit_show(ctx: click.Context, event_id: str, as_json: bool) -> None:
    """Draw one logout as a timeline: received, sessions ended, plan built, each delivery's
    attempts (latency, outcome, error), settled; times relative to the start.

    EVENT_ID is an event id or a unique start of one (as audit list --event); an unknown or
    ambiguous one exits 2. Only reads: never migrates.
    """
    from workers.timeline import show_timeline

    show_timeline(settings_of(ctx), event_id, as_json=as_json)
