"""``audit``: the audit trail."""

from __future__ import annotations

import click

from workers.cli.base import Actor, settings_of
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


@audit.command("verify", logs=False)
@click.option(
    "--since",
    help="Only the chain from the first record written at or after this time "
    "(its first link taken as given unless a checkpoint signed it).",
)
@click.option(
    "--file",
    "file",
    help="Verify this export (`audit export`, JSON lines or CSV) offline, without the database.",
)
@click.option(
    "--jwks",
    "jwks_path",
    help="Verify checkpoints with this JWKS (what `keys jwks` prints; default: the IdP's keys).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of lines.")
@click.pass_context
def audit_verify(
    ctx: click.Context, since: str | None, file: str | None, jwks_path: str | None, as_json: bool
) -> None:
    """Verify the hash chain and the signed checkpoints of the trail (or of an export).

    Seals what is committed first, then names every altered, deleted, inserted or reordered
    record and every forged checkpoint; exits 9 when there is any, 0 when the chain is intact.
    """
    from workers.audit_chain import verify_command

    status = verify_command(
        settings_of(ctx), since=since, file=file, jwks_path=jwks_path, as_json=as_json
    )
    ctx.exit(status)


@audit.command("export", logs=False)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv"]),
    default="jsonl",
    show_default=True,
    help="JSON lines or CSV.",
)
@click.option("--since", help="From the first record written at or after this time.")
@click.option("--until", help="Up to the last record before the first written at or after it.")
@click.option("--output", "-o", help="Write to this file instead of standard output.")
@click.pass_context
def audit_export(
    ctx: click.Context, fmt: str, since: str | None, until: str | None, output: str | None
) -> None:
    """Stream the trail with its chain data and checkpoints, for `audit verify --file`.

    Seals what is committed and, without --until, signs a checkpoint of the head when it moved
    since the last one, so the whole export is covered by a signature.
    """
    from workers.audit_chain import export_command

    export_command(settings_of(ctx), fmt=fmt, since=since, until=until, output=output)


@audit.command("purge")
@click.option(
    "--before", required=True, help="Delete the records of the chain written before this time."
)
@click.option(
    "--actor",
    type=Actor(),
    help="Who purges, recorded in the audit.purged record.",
)
@click.pass_context
def audit_purge(ctx: click.Context, before: str, actor: str | None) -> None:
    """Retention: delete old records, keeping a signed checkpoint so what remains verifies.

    Refuses (exit 9) when the trail does not verify first; records an audit.purged record;
    verifies what remains and says so.
    """
    from workers.audit_chain import purge_command

    ctx.exit(purge_command(settings_of(ctx), before=before, actor=actor))
