"""``providers``: relying parties and service providers."""

from __future__ import annotations

import click

from workers.cli.base import console, read_input, settings_of
from workers.cli.root import main


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
