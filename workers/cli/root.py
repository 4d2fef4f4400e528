"""The ``logout-orchestrator`` group: reads the settings once, for every command."""

from __future__ import annotations

import click

from schemas.errors import LogoutError
from workers.cli.base import Group, fail

__all__ = ["main"]


@click.group(cls=Group)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    envvar="LOGOUT_CONFIG",
    help="TOML settings file (else LOGOUT_CONFIG); LOGOUT_* variables override it.",
)
@click.version_option(package_name="logout-orchestrator", prog_name="logout-orchestrator")
@click.pass_context
def main(ctx: click.Context, config_file: str | None) -> None:
    """End a user's sessions everywhere: OIDC and SAML logout fan-out with an audit trail.

    Exit statuses: 0 done, 1 internal error, 2 input refused or usage, 3 binding broken,
    4 broker unreachable (nothing published, or kept in the outbox), 5 database unreachable,
    6 configuration, 7 schema missing or behind (run db upgrade), 8 stopped before the work
    was done, 9 audit trail broken (audit verify; audit purge refuses).
    """
    if ctx.resilient_parsing:
        return
    from orchestrator.settings import Settings

    try:
        ctx.obj = Settings.load(config_file)
    except LogoutError as exc:
        fail(ctx, exc)
