"""The IdP's identity: OIDC signing keys and SAML metadata."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from workers.cli.base import console, settings_of
from workers.cli.root import main

if TYPE_CHECKING:
    from protocols.oidc import OidcHandler
    from protocols.oidc.keys import Algorithm


@main.group()
def keys() -> None:
    """The IdP's logout-token signing keys (OIDC)."""


def _oidc(ctx: click.Context) -> OidcHandler:
    from orchestrator.handlers import build_handler
    from protocols.oidc import OidcHandler

    return build_handler(settings_of(ctx), OidcHandler)


@keys.command("generate")
@click.option("--alg", type=click.Choice(["RS256", "ES256"]), default="RS256", show_default=True)
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False),
    help="Where to write the PEM file (default: <data_dir>/oidc-keys, published at once).",
)
@click.pass_context
def keys_generate(ctx: click.Context, alg: Algorithm, directory: str | None) -> None:
    """Write a new private key as <kid>.pem (mode 0600); print its kid and path."""
    from protocols.oidc import generate_key

    settings = settings_of(ctx)
    key = generate_key(Path(directory) if directory else settings.data_dir / "oidc-keys", alg)
    console().print(f"kid {key.kid} ({key.alg}) written to {key.source}", markup=False)
    console(stderr=True).print(
        "It is published in `keys jwks` now (when in the data directory or listed in "
        "key_files of [protocols.oidc]); sign with it by setting active_kid there (or "
        "LOGOUT_OIDC_ACTIVE_KID) once relying parties "
        "have fetched the new JWKS.",
        markup=False,
    )


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="A JSON array instead of a table.")
@click.pass_context
def keys_list(ctx: click.Context, as_json: bool) -> None:
    """List every published key: kid, algorithm, source (file or generated), path, and
    which one signs. Like keys jwks, generates the default key when there is none."""
    listing = _oidc(ctx).keys.listing()
    if as_json:
        sys.stdout.write(json.dumps(listing, indent=2) + "\n")
        return
    rows = [("KID", "ALG", "SOURCE", "SIGNS", "PATH")]
    rows += [
        (k["kid"], k["alg"], k["source"], "yes" if k["signs"] else "", k["path"]) for k in listing
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        sys.stdout.write("  ".join([*cells, row[4]]) + "\n")


@keys.command("jwks")
@click.pass_context
def keys_jwks(ctx: click.Context) -> None:
    """Print the public JWKS relying parties use to verify logout tokens."""
    sys.stdout.write(json.dumps(_oidc(ctx).keys.jwks(), indent=2) + "\n")


@main.group()
def saml() -> None:
    """The IdP's SAML identity."""


@saml.command("metadata")
@click.pass_context
def saml_metadata(ctx: click.Context) -> None:
    """Print the IdP metadata SPs trust: entity id, signing certificate, SLO/SSO endpoints."""
    from orchestrator.handlers import build_handler
    from protocols.saml import SamlHandler

    sys.stdout.write(build_handler(settings_of(ctx), SamlHandler).metadata().decode("utf-8") + "\n")
