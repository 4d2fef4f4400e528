"""Shared Signals: the bearer token an upstream transmitter sends with its pushes."""

from __future__ import annotations

import click

from workers.cli.root import main


@main.group()
def ssf() -> None:
    """Shared Signals (CAEP) streams of upstream transmitters (ssf_transmitters)."""


@ssf.command("push-token", logs=False)
def push_token() -> None:
    """Make a new random push token: prints the token (give it to the transmitter, once)
    and the push_token_sha256 value of its stream (put it in the settings)."""
    from orchestrator.api_tokens import hash_token, new_token

    token = new_token()
    click.echo(f"token: {token}")
    click.echo(f'push_token_sha256 = "{hash_token(token)}"')
