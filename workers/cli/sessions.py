"""``sessions``: IdP sessions and provider sessions."""

from __future__ import annotations

import click

from workers.cli.base import console, read_input, settings_of
from workers.cli.root import main
from workers.exit_codes import ExitCode


@main.group()
def sessions() -> None:
    """IdP sessions and provider sessions."""


@sessions.command("import")
@click.argument("file")
@click.pass_context
def sessions_import(ctx: click.Context, file: str) -> None:
    """Upsert sessions from JSON lines with a "kind" field (session | provider_session)."""
    from orchestrator.runtime import Runtime
    from workers.progress import ProgressBar, import_summary

    runtime = Runtime.start(settings_of(ctx))
    try:
        with ProgressBar() as progress:
            summary = runtime.registry.import_lines(read_input(file).splitlines(), progress)
    finally:
        runtime.close()
    for warning in summary.warnings:
        console(stderr=True).print(f"warning: {warning}", markup=False)
    console().print(import_summary(summary, progress.elapsed), markup=False)


@sessions.command("sweep")
@click.pass_context
def sessions_sweep(ctx: click.Context) -> None:
    """Publish session.expired now for every session past its idle or absolute limit.

    Workers do this every expiry_interval seconds; this runs one sweep at once. Claims and
    their events are written to the outbox together, then published with whatever else the
    outbox holds. Exit status 4: the broker did not answer; the events are kept in the outbox.
    """
    from orchestrator.expiry import ExpirySweeper
    from orchestrator.runtime import Runtime
    from workers.relaying import command_relay, kept_message

    settings = settings_of(ctx)
    runtime = Runtime.start(settings)
    try:
        with command_relay(settings, runtime) as relay:
            sweep = ExpirySweeper(
                runtime.database,
                runtime.policy,
                namespace=settings.namespace,
                batch=settings.expiry_batch,
                max_per_sweep=settings.expiry_max_per_sweep,
            ).sweep()
            report = relay.run()
    finally:
        runtime.close()
    # The relay's total: with memory:// it also ran when the embedded worker started.
    console().print(f"expired: {sweep.claimed} claimed, {relay.total_published} published")
    if report.error is not None:
        console(stderr=True).print(kept_message(report), markup=False)
        ctx.exit(ExitCode.BROKER_UNAVAILABLE)
