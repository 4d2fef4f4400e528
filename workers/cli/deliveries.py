"""``deliveries``: the logouts sent to each provider, and retrying failed ones."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from schemas.errors import InputError
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
    from sqlalchemy import Engine

    from orchestrator.operations import DeliveryQuery, DeliveryView

_STATUSES = ("failed", "retrying", "pending", "succeeded", "skipped")


@main.group()
def deliveries() -> None:
    """The logouts sent to each provider session, and retrying failed ones."""


@deliveries.command("list", logs=False)
@click.option("--status", type=click.Choice(_STATUSES), help="Only deliveries in this status.")
@click.option("--provider", help="Only deliveries to this provider.")
@click.option("--since", help="Only deliveries changed at or after this time (or date).")
@click.option("--event", "event", help="Only this event's deliveries: its id or a unique start.")
@listing_options
@click.pass_context
def deliveries_list(
    ctx: click.Context,
    status: str | None,
    provider: str | None,
    since: str | None,
    event: str | None,
    limit: int | None,
    as_json: bool,
) -> None:
    """List deliveries, oldest first: the latest LIMIT by last change.

    Only reads: never migrates (a missing or older schema exits 7: run db upgrade).
    """
    from orchestrator.operations import list_deliveries
    from orchestrator.store.reading import reading_engine

    settings = settings_of(ctx)
    engine = reading_engine(settings.effective_database_url, settings.origin("database_url"))
    try:
        query = _query(engine, status, provider, since, event)
        page = list_deliveries(engine, query, page_limit(limit, as_json))
    finally:
        engine.dispose()
    print_page(page, as_json, _HEADER, _row, "deliveries")


@deliveries.command("retry")
@click.argument("ids", nargs=-1)
@click.option("--failed", is_flag=True, help="Every failed delivery the filters select.")
@click.option("--provider", help="With --failed: only deliveries to this provider.")
@click.option("--since", help="With --failed: only deliveries failed at or after this time.")
@click.option(
    "--actor",
    type=Actor(),
    required=True,
    help="Who asks for it (recorded in the audit trail).",
)
@click.pass_context
def deliveries_retry(
    ctx: click.Context,
    ids: tuple[str, ...],
    failed: bool,
    provider: str | None,
    since: str | None,
    actor: str,
) -> None:
    """Try failed deliveries once more: IDS, or --failed [--provider P] [--since T].

    Each is made due again and handed to the workers the way every retry is (the deliveries
    queue, through the outbox), audited as delivery.retry_requested with the actor. A
    delivery that succeeded or was skipped is refused (nothing applied); one pending or
    retrying is already on its way and left alone.
    """
    from orchestrator.operations import DeliveryQuery, request_retries
    from workers.relaying import command_runtime, publish_written

    if bool(ids) == failed:
        raise click.UsageError("give delivery IDS or --failed (with --provider, --since)")
    if ids and (provider or since):
        raise click.UsageError("--provider and --since select with --failed, not with IDS")
    selection = DeliveryQuery(provider=provider, since=since_of(since)) if failed else None
    settings = settings_of(ctx)
    runtime = command_runtime(settings)
    try:
        report = request_retries(
            runtime.engine, settings.namespace, actor, ids=ids, failed=selection
        )
        publish_written(settings, runtime, report.message_ids)
    finally:
        runtime.close()
    out = console()
    for view in report.retried:
        out.print(f"retry requested: {view.id} ({view.provider}, after attempt {view.attempts})")
    for view in report.in_flight:
        out.print(f"already on its way: {view.id} ({view.provider}, {view.status})")
    out.print(f"{len(report.retried)} retried, {len(report.in_flight)} already on their way")


def _query(
    engine: Engine, status: str | None, provider: str | None, since: str | None, event: str | None
) -> DeliveryQuery:
    from orchestrator.operations import delivery_query

    after = since_of(since)
    try:
        return delivery_query(engine, status=status, provider=provider, event=event, since=after)
    except InputError as exc:
        problem = exc.problems[0]
        raise click.BadParameter(problem.message, param_hint=f"'--{problem.field}'") from None


_HEADER = ("id", "status", "provider", "event", "user", "attempts", "code", "updated", "last error")


def _row(v: DeliveryView) -> tuple[str, ...]:
    return (
        v.id,
        v.status,
        v.provider,
        v.event_id[:8],
        v.user_id,
        str(v.attempts),
        str(v.last_status_code or ""),
        v.updated_at.strftime("%Y-%m-%d %H:%M:%S"),
        v.last_error or "",
    )
