"""``providers``: relying parties and service providers."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from schemas.errors import InputError, Problem
from workers.cli.base import (
    Actor,
    Seconds,
    console,
    print_json_lines,
    print_table,
    read_input,
    settings_of,
)
from workers.cli.root import main

if TYPE_CHECKING:
    from orchestrator.runtime import Runtime


@main.group()
def providers() -> None:
    """Relying parties and service providers."""


@providers.command("load")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.pass_context
def providers_load(ctx: click.Context, file: str) -> None:
    """Upsert the [[providers]] of a TOML file; an invalid file is refused whole.

    Every problem of the file is named at once (file, provider, field), before the
    database is reached.
    """
    from orchestrator.handlers import load_handlers
    from orchestrator.providers_file import check_providers, read_providers_toml
    from orchestrator.runtime import Runtime

    settings = settings_of(ctx)
    handlers = load_handlers(settings)
    tables = read_providers_toml(read_input(file, regular=True), file)
    checked = check_providers(tables, handlers, file, egress_allow=settings.egress_allow)
    runtime = Runtime.start(settings, handlers=handlers)
    try:
        summary = runtime.registry.store_providers(checked)
    finally:
        runtime.close()
    for warning in summary.warnings:
        console(stderr=True).print(f"[yellow]warning[/]: {warning}")
    console().print(f"providers: {summary.created} created, {summary.updated} updated")


@providers.command("list", logs=False)
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of a table.")
@click.pass_context
def providers_list(ctx: click.Context, as_json: bool) -> None:
    """List providers: protocol, method, enabled, open provider sessions.

    Only reads: never migrates (a missing or older schema exits 7: run db upgrade).
    """
    from orchestrator.handlers import load_handlers
    from orchestrator.operations import list_providers
    from orchestrator.runtime import Runtime

    settings = settings_of(ctx)
    handlers = load_handlers(settings)
    runtime = Runtime.for_reading(settings)
    try:
        views = list_providers(runtime.engine, handlers)
    finally:
        runtime.close()
    if as_json:
        print_json_lines(view.as_json() for view in views)
        return
    header = ("name", "protocol", "method", "enabled", "open sessions")
    rows = (
        (v.name, v.protocol, v.method, "yes" if v.enabled else "no", str(v.open_sessions))
        for v in views
    )
    print_table(header, rows)


def _switch(ctx: click.Context, name: str, actor: str, enabled: bool) -> None:
    from orchestrator.operations import set_enabled
    from orchestrator.runtime import Runtime

    runtime = Runtime.start(settings_of(ctx))
    try:
        changed = set_enabled(runtime.engine, runtime.handlers, name, enabled, actor)
    finally:
        runtime.close()
    state = "enabled" if enabled else "disabled"
    if changed:
        console().print(f"provider {name!r} {state}", markup=False)
    else:
        console().print(f"provider {name!r} was already {state}; nothing changed", markup=False)


@providers.command("disable")
@click.argument("name")
@click.option(
    "--actor",
    type=Actor(),
    required=True,
    help="Who disables it (recorded in the audit trail).",
)
@click.pass_context
def providers_disable(ctx: click.Context, name: str, actor: str) -> None:
    """Send NAME no more logouts: its deliveries end skipped ("provider is disabled").

    Its provider sessions still end with their IdP sessions; audited as provider.disabled.
    """
    _switch(ctx, name, actor, enabled=False)


@providers.command("enable")
@click.argument("name")
@click.option(
    "--actor",
    type=Actor(),
    required=True,
    help="Who enables it (recorded in the audit trail).",
)
@click.pass_context
def providers_enable(ctx: click.Context, name: str, actor: str) -> None:
    """Send NAME logouts again (refused when no enabled handler serves its protocol)."""
    _switch(ctx, name, actor, enabled=True)


@providers.command("remove")
@click.argument("name")
@click.option(
    "--end-sessions",
    is_flag=True,
    help="Log its open provider sessions out first (one logout.provider each), then remove.",
)
@click.option(
    "--full-logout",
    is_flag=True,
    help="With --end-sessions: also end those users' IdP sessions, and so every provider "
    "session of them (logs them out everywhere). Without it only NAME's sessions end.",
)
@click.option(
    "--wait",
    type=Seconds(),
    default=60.0,
    show_default=True,
    help="With --end-sessions: seconds to wait for the workers to end them (at most a day).",
)
@click.option(
    "--actor",
    type=Actor(),
    required=True,
    help="Who removes it (recorded in the audit trail).",
)
@click.pass_context
def providers_remove(
    ctx: click.Context, name: str, end_sessions: bool, full_logout: bool, wait: float, actor: str
) -> None:
    """Remove NAME, its ended provider sessions and their deliveries.

    Refused (exit 2) while provider sessions are open, naming the count, unless
    --end-sessions: a logout.provider (initiator admin) is published for each, the workers
    end them (NAME's sessions only, whatever its full_logout_on_rp_initiated; --full-logout:
    the users' IdP sessions too) and send their logouts, and NAME is removed once they are
    all final (exit 8 when that takes longer than --wait: run it again). Audited as
    provider.removed.
    """
    from orchestrator.runtime import Runtime

    if full_logout and not end_sessions:
        raise InputError(
            [Problem("--full-logout", "", "goes with --end-sessions (the sessions to end)")]
        )
    settings = settings_of(ctx)
    runtime = Runtime.start(settings)
    try:
        if end_sessions:
            _end_sessions(runtime, name, actor, wait, full_logout)
        from orchestrator.operations import remove_provider

        removed = remove_provider(runtime.engine, name, actor)
    finally:
        runtime.close()
    console().print(
        f"provider {name!r} removed with {removed['provider_sessions']} ended provider "
        f"session(s) and {removed['deliveries']} deliveries",
        markup=False,
    )


def _end_sessions(runtime: Runtime, name: str, actor: str, wait: float, full_logout: bool) -> None:
    """Publish the logouts of NAME's open provider sessions; wait until they are final."""
    import time

    from orchestrator.operations import end_provider_sessions, remove_blockers
    from schemas.errors import IncompleteError
    from workers.relaying import publish_written

    settings = runtime.settings
    report = end_provider_sessions(
        runtime.engine, settings.namespace, name, actor, full_logout=full_logout
    )
    if report.message_ids:
        note = " (their IdP sessions end too: --full-logout)" if report.full_logout else ""
        console().print(
            f"ending {len(report.message_ids)} provider session(s) of {name!r}{note}",
            markup=False,
        )
    publish_written(settings, runtime, report.message_ids, wait)
    deadline = time.monotonic() + wait
    while any(remove_blockers(runtime.engine, name)):
        if time.monotonic() > deadline:
            open_sessions, on_the_way = remove_blockers(runtime.engine, name)
            raise IncompleteError(
                f"after {wait:g} s, {open_sessions} provider session(s) of {name!r} are still "
                f"open and {on_the_way} delivery(ies) on their way; {name!r} is not removed. "
                "Check that a worker runs, then run this again (nothing is published twice)"
            )
        time.sleep(0.2)
