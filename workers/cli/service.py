"""Long-running commands (worker, serve), API tokens and the demo."""

from __future__ import annotations

import json

import click

from schemas.scopes import SCOPES
from workers.cli.base import console, settings_of
from workers.cli.root import main


@main.command()
@click.option(
    "--processes", type=click.IntRange(1, 64), help="Worker processes (worker_processes)."
)
@click.option(
    "--threads", type=click.IntRange(1, 256), help="Threads per process (worker_threads)."
)
@click.pass_context
def worker(ctx: click.Context, processes: int | None, threads: int | None) -> None:
    """Consume events from the broker until SIGTERM/SIGINT.

    Waits for the database and the broker first (retrying with a growing back-off, one log
    line per attempt); "worker started" is logged once both have answered.
    """
    from workers.process import serve

    settings = settings_of(ctx).with_overrides(worker_processes=processes, worker_threads=threads)
    ctx.exit(serve(settings))


@main.command()
@click.option("--host", help="Address to listen on (api_host).")
@click.option("--port", type=click.IntRange(1, 65535), help="Port (api_port).")
@click.option("--workers", type=click.IntRange(1, 64), help="Processes (api_workers).")
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None, workers: int | None) -> None:
    """Run the HTTP service (events, logouts, plans, sessions, health, metrics) until
    SIGTERM/SIGINT. Needs a shared broker (redis:// or amqp://) and the workers' database."""
    try:
        from api import serve as serve_api
    except ImportError as exc:  # the [api] extra is not installed
        from schemas.errors import ConfigurationError

        raise ConfigurationError(
            f"serve needs the HTTP stack ({exc.name or exc}): pip install "
            "'logout-orchestrator[api]'"
        ) from exc

    settings = settings_of(ctx).with_overrides(api_host=host, api_port=port, api_workers=workers)
    ctx.exit(serve_api(settings))


@main.group()
def api() -> None:
    """The HTTP service's bearer tokens."""


@api.command("token", logs=False)
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    required=True,
    type=click.Choice(SCOPES),
    help="A scope of the token (repeat for several).",
)
@click.option("--name", default="client", show_default=True, help="Who holds it.")
def api_token(scopes: tuple[str, ...], name: str) -> None:
    """Make a new random token: prints the token (give it to the client, once) and the
    api_tokens entry holding only its hash (put it in the settings)."""
    from orchestrator.api_tokens import hash_token, new_token

    token = new_token()
    entry = {"name": name, "sha256": hash_token(token), "scopes": sorted(set(scopes))}
    click.echo(f"token: {token}")
    click.echo(f"api_tokens entry: {json.dumps(entry, sort_keys=True)}")


@main.command()
@click.option("--data-dir", type=click.Path(file_okay=False), help="Keep the demo's data here.")
@click.pass_context
def demo(ctx: click.Context, data_dir: str | None) -> None:
    """Run the demo on embedded defaults: memory broker, SQLite, sample data."""
    from workers.demo import run_demo

    ctx.exit(run_demo(console(), data_dir))
