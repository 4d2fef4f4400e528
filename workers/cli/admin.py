"""Settings and the database schema."""

from __future__ import annotations

import json
import sys

import click

from workers.cli.base import console, settings_of
from workers.cli.root import main


@main.group()
def config() -> None:
    """Settings."""


@config.command("show", logs=False, teardown=False)
@click.pass_context
def config_show(ctx: click.Context) -> None:
    """Print the effective settings as JSON, secrets redacted.

    URL passwords are masked, derived defaults show their value in force, and each duration
    is {"value": ..., "reading": "900 days"}. Each handler's section given ([protocols.NAME],
    LOGOUT_NAME_*) is checked as a worker checks it: a refused one exits 6.
    """
    settings = settings_of(ctx)
    if settings.protocol_settings:  # else every handler takes its defaults: nothing to check
        from orchestrator.handlers import load_handlers

        load_handlers(settings)  # nothing is started: no key is read or made
    sys.stdout.write(json.dumps(settings.redacted(), indent=2, sort_keys=True) + "\n")


@main.group()
def db() -> None:
    """The database schema."""


@db.command("upgrade")
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Apply every pending migration (workers also do this at start when auto_migrate)."""
    from orchestrator.runtime import Runtime
    from orchestrator.store.migrate import upgrade

    runtime = Runtime.start(settings_of(ctx), migrate=False, handlers={})
    try:
        moved = upgrade(runtime.engine)
    finally:
        runtime.close()
    if moved is None:
        console().print("database is up to date: nothing to apply")
    else:
        console().print(f"database upgraded from {moved[0]} to {moved[1]}")
