"""``logout-orchestrator``: the command line. Settings are read once, here.

Each command imports what it needs when it runs, so ``--help``, ``config show`` and
``audit list`` start without loading the HTTP, SAML and broker stacks (``bench/cli_startup.py``).
Failures are one or two sentences and an exit status from :class:`workers.exit_codes.ExitCode`.
"""

from __future__ import annotations

import gc
import json
import os
import sys
from collections.abc import Mapping, Sequence
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from schemas.errors import InputError, LogoutError, Problem
from schemas.scopes import SCOPES
from workers.exit_codes import ExitCode, exit_code_for, foreign_error

if TYPE_CHECKING:
    from rich.console import Console

    from orchestrator.runtime import Runtime
    from orchestrator.settings import Settings
    from orchestrator.validation import EventCheck
    from protocols import ProtocolHandler
    from protocols.oidc import OidcHandler
    from protocols.oidc.keys import Algorithm
    from schemas import Event, HttpRequest

__all__ = ["main"]


def _console(stderr: bool = False) -> Console:
    from rich.console import Console

    # Piped output (CI logs, files) is not cut to 80 columns.
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else 200
    return Console(file=stream, highlight=False, soft_wrap=True, width=width)


def _settings(ctx: click.Context) -> Settings:
    settings: Settings = ctx.find_root().obj
    return settings


def _read(path: str, *, regular: bool = False) -> str:
    """The text of ``path`` (``-``: standard input); InputError (exit 2) when it cannot be read
    or is not UTF-8 (JSON lines and TOML are UTF-8).

    A device, directory or socket is refused (``/dev/zero`` would be read forever), except
    ``/dev/null`` (empty); a FIFO is read unless ``regular`` (a configuration file, read whole
    and bounded).
    """
    import os
    import stat

    from protocols.files import CONFIG_MAX, UnreadableFileError, file_kind, read_regular_file

    try:
        if path == "-":
            return sys.stdin.read()
        if path == os.devnull:
            return ""
        if regular:
            return read_regular_file(path, CONFIG_MAX).decode("utf-8")
        mode = os.stat(path).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
            problem = f"{file_kind(mode)}, not a file; give a file, or - for standard input"
            raise InputError([Problem(path, "", problem)])
        return Path(path).read_text(encoding="utf-8")
    except UnreadableFileError as exc:
        problem = f"cannot read it: {exc}"
    except OSError as exc:
        problem = f"cannot read it: {exc.strerror or exc}; check the path and its permissions"
    except UnicodeDecodeError as exc:
        problem = f"not UTF-8 text (byte {exc.start}); save it as UTF-8"
    raise InputError([Problem(path if path != "-" else "standard input", "", problem)])


def _fail(ctx: click.Context, error: LogoutError) -> None:
    """Print ``error`` as one or two lines and exit with its status."""
    if isinstance(error, InputError):
        _console(stderr=True).print(
            f"[bold red]refused[/]: {len(error.problems)} problem(s), nothing was applied"
        )
        for problem in error.problems:
            _console(stderr=True).print(f"  {problem}", markup=False)
    else:
        from rich.markup import escape

        _console(stderr=True).print(f"[bold red]error[/]: {escape(str(error))}")
    ctx.exit(int(exit_code_for(error)))


class _Teardown:
    """Whether the process needs the interpreter's teardown when the command is done."""

    needed = True


def _exit_at_once(code: Any) -> None:
    """Flush the output and end the process with ``code`` (a ``SystemExit`` code), skipping
    the interpreter's teardown: freeing every loaded module costs a reading command a
    quarter of its run (``bench/cli_startup.py``) and, after it, nothing is left to do."""
    if isinstance(code, str):
        sys.stderr.write(code + "\n")
    status = 0 if code is None else code if isinstance(code, int) else 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:  # a reader that stopped early (``| head``) wants no more
        pass
    os._exit(status)


class _Command(click.Command):
    """A command; ``logs=False`` for those that never log (no logging set-up to pay for).

    ``teardown=False`` for those that only read and print, holding nothing open when done
    (threads, files, connections): run as the program, they exit without the interpreter's
    teardown (see :func:`_exit_at_once`) and run without the cyclic garbage collector, which
    costs them a tenth of their start (scanning every object their imports made, again and
    again) and would find little: streaming the whole audit trail leaves about 8 objects per
    page of 500 records to it. Every other command turns the collector back on.
    """

    def __init__(self, *args: Any, logs: bool = True, teardown: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.logs = logs
        self.teardown = teardown

    def invoke(self, ctx: click.Context) -> Any:
        settings = ctx.find_root().obj
        if self.logs and settings is not None:
            from orchestrator.logging import configure_logging

            configure_logging(settings.log_level, settings.log_format)
        _Teardown.needed = self.teardown
        if self.teardown:
            gc.enable()
        return super().invoke(ctx)


class _Group(click.Group):
    """Turns every failure into one clear message and its exit status, never a traceback."""

    command_class = _Command
    group_class = type  # subgroups are _Group too

    def main(self, args: Sequence[str] | None = None, *rest: Any, **options: Any) -> Any:
        """Run; as the program itself (the command line read from ``sys.argv``, in standalone
        mode), without the garbage collector until a command that needs it starts, and a
        command with ``teardown=False`` ends the process at once when done."""
        if args is not None or not options.get("standalone_mode", True):
            return super().main(args, *rest, **options)
        gc.disable()  # imports make many objects and no cyclic garbage (see _Command)
        try:
            return super().main(args, *rest, **options)
        except SystemExit as exc:
            if not _Teardown.needed:
                _exit_at_once(exc.code)
            raise
        finally:
            gc.enable()

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except LogoutError as exc:
            _fail(ctx, exc)
        except Exception as exc:  # the boundary: a sentence, never a traceback
            settings = ctx.find_root().obj
            if settings is not None:
                from orchestrator.settings import redact_url

                database = redact_url(settings.effective_database_url)
                translated = foreign_error(exc, database, redact_url(settings.broker_url))
                if translated is not None:
                    _fail(ctx, translated)
                if settings.log_level == "DEBUG":
                    raise
            from rich.markup import escape

            # The first line only: a database error goes on with the SQL and its parameters,
            # which may hold what the input held.
            reason = (str(exc).strip().splitlines() or [""])[0]
            _console(stderr=True).print(
                f"[bold red]internal error[/]: {type(exc).__name__}: {escape(reason)}"
            )
            _console(stderr=True).print(
                "This is a bug; LOGOUT_LOG_LEVEL=DEBUG shows the traceback to report.",
                markup=False,
            )
            ctx.exit(int(ExitCode.INTERNAL))


@click.group(cls=_Group)
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
    was done.
    """
    if ctx.resilient_parsing:
        return
    from orchestrator.settings import Settings

    try:
        ctx.obj = Settings.load(config_file)
    except LogoutError as exc:
        _fail(ctx, exc)


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

    settings = _settings(ctx).with_overrides(worker_processes=processes, worker_threads=threads)
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

    settings = _settings(ctx).with_overrides(api_host=host, api_port=port, api_workers=workers)
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
@click.argument("source", default="-")
@click.option(
    "--wait",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="memory:// only: seconds to wait for the events, then for delivery retries (> 0).",
)
@click.pass_context
def publish(ctx: click.Context, source: str, wait: float) -> None:
    """Validate and publish events from SOURCE (a file of one JSON object or JSON lines, or -).

    Nothing of a batch is published when any event is invalid; every problem (each bad
    line, and --wait) is named at once. With broker_url memory:// the events are handled
    right here, in-process, after checking that the directories it writes to are writable.
    """
    from orchestrator.validation import parse_event_lines
    from workers.broker import is_in_process
    from workers.progress import MAX_LISTED_ON_TERMINAL, ProgressBar, Reported, publish_summary

    settings = _settings(ctx)
    handlers = None
    problems = []
    check = None
    if is_in_process(settings):
        from orchestrator.handlers import load_handlers, start_handlers

        handlers = load_handlers(settings)
        start_handlers(settings, handlers)
        if wait <= 0:
            problems.append(_WAIT_PROBLEM)
        check = _served_bindings(settings)
    with ProgressBar() as progress:
        try:
            events = parse_event_lines(_read(source), progress, check)
        except InputError as exc:
            raise InputError([*exc.problems, *problems]) from exc
        if problems:
            raise InputError(problems)
        refused = _publish_events(
            settings, Reported(events, progress, "publishing"), wait, handlers
        )
    if not (progress.shown and len(events) > MAX_LISTED_ON_TERMINAL):
        for event in events:
            _console().print(f"published {event.type} {event.event_id}", markup=False)
    _console().print(publish_summary(len(events), progress.elapsed), markup=False)
    if refused:  # memory:// only: a worker elsewhere records them the same way, later
        for problem in refused:
            _console(stderr=True).print(str(problem), markup=False)
        ctx.exit(int(ExitCode.INPUT))


def _served_bindings(settings: Settings) -> EventCheck:
    """What the in-process worker would refuse of a valid event: a ``session.started``
    binding mode no configured GeoIP database serves (checked with the rest of the input)."""
    from orchestrator.binding import unserved_modes

    def check(event: Event) -> list[tuple[str, str]]:
        if event.type != "session.started":
            return []
        return unserved_modes(
            event.network_binding,
            event.geoip_binding,
            has_asn_database=settings.geoip_asn_db is not None,
            has_city_database=settings.geoip_city_db is not None,
        )

    return check


#: ``publish --wait 0`` on ``memory://``: the events could not be handled.
_WAIT_PROBLEM = Problem(
    "--wait",
    "",
    "with broker_url memory:// the events are handled inside this command, so it must wait "
    "for them: give --wait seconds > 0 (default 30), or publish to redis:// or amqp:// for "
    "a worker",
)


def _publish_events(
    settings: Settings,
    events: Sequence[Event],
    wait: float = 30.0,
    handlers: Mapping[str, ProtocolHandler] | None = None,
) -> list[Problem]:
    """Publish on the configured broker; with memory:// handle them here, in-process, and
    return what the worker refused of them (recorded as ``event.rejected``).

    Loses nothing: each event is recorded in the outbox as it is enqueued (so a broker that
    loses it, or fails part-way, leaves it to the workers' relay and recovery), an unreachable
    broker is found before anything is recorded, and with memory:// the command returns only
    once every event was handled (else it says so).
    """
    from workers.broker import build_broker, check_broker, is_in_process

    if not is_in_process(settings):
        from orchestrator.publishing import Publisher
        from orchestrator.runtime import Runtime
        from schemas.errors import BrokerUnavailableError
        from workers.relaying import kept_message

        runtime = Runtime.start(settings, handlers={})
        try:
            broker = build_broker(settings)
            try:
                try:
                    check_broker(broker, settings)
                except BrokerUnavailableError as exc:
                    raise BrokerUnavailableError(f"{exc}. Nothing was published") from exc
                report = Publisher(broker, runtime.database, settings.namespace).enqueue(events)
            finally:
                broker.close()
        finally:
            runtime.close()
        if report.error is not None:
            raise BrokerUnavailableError(kept_message(report))
        return []
    if wait <= 0:
        raise InputError([_WAIT_PROBLEM])
    from orchestrator.runtime import Runtime
    from workers.process import drain, embedded

    runtime = Runtime.start(settings, handlers=handlers)
    with closing(runtime), embedded(settings, runtime) as actors:
        actors.publisher.enqueue(events)
        again = f"publish the same input again with a longer --wait than {wait:g}"
        if not drain(actors, wait, again):
            _console(stderr=True).print(
                "some deliveries are still retrying; they resume on the next run"
            )
        return _refused_by_the_worker(actors.runtime, [str(e.event_id) for e in events])


def _refused_by_the_worker(runtime: Runtime, event_ids: Sequence[str]) -> list[Problem]:
    """What the in-process worker refused of ``event_ids`` (valid as events, refused by what
    handles them, e.g. a binding no database serves): each recorded as ``event.rejected``."""
    from sqlalchemy import select

    from orchestrator.store import RejectedEvent

    with runtime.database() as db:
        rows = db.execute(
            select(RejectedEvent.event_id, RejectedEvent.problems).where(
                RejectedEvent.event_id.in_(event_ids)
            )
        ).all()
    return [
        Problem(f"event {event_id}", "", f"refused by the worker (recorded): {problem}")
        for event_id, problems in rows
        for problem in problems or ["refused"]
    ]


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

    settings = _settings(ctx)
    handlers = load_handlers(settings)
    tables = read_providers_toml(_read(file, regular=True), file)
    checked = check_providers(tables, handlers, file, egress_allow=settings.egress_allow)
    runtime = Runtime.start(settings, handlers=handlers)
    try:
        summary = runtime.registry.store_providers(checked)
    finally:
        runtime.close()
    for warning in summary.warnings:
        _console(stderr=True).print(f"[yellow]warning[/]: {warning}")
    _console().print(f"providers: {summary.created} created, {summary.updated} updated")


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

    runtime = Runtime.start(_settings(ctx))
    try:
        with ProgressBar() as progress:
            summary = runtime.registry.import_lines(_read(file).splitlines(), progress)
    finally:
        runtime.close()
    for warning in summary.warnings:
        _console(stderr=True).print(f"warning: {warning}", markup=False)
    _console().print(import_summary(summary, progress.elapsed), markup=False)


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

    settings = _settings(ctx)
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
    _console().print(f"expired: {sweep.claimed} claimed, {relay.total_published} published")
    if report.error is not None:
        _console(stderr=True).print(kept_message(report), markup=False)
        ctx.exit(ExitCode.BROKER_UNAVAILABLE)


@main.group()
def binding() -> None:
    """Network and GeoIP session binding."""


@binding.command("check")
@click.option("--session", "session_id", required=True, help="The IdP session id.")
@click.option("--ip", required=True, help="The address the session's request came from.")
@click.option("--path", default=None, help="The request's path (for the audit trail).")
@click.option("--method", default=None, help="The request's HTTP method.")
@click.option("--user-agent", default=None, help="The request's User-Agent.")
@click.option("--dry-run", is_flag=True, help="Judge only; publish nothing.")
@click.pass_context
def binding_check(
    ctx: click.Context,
    session_id: str,
    ip: str,
    path: str | None,
    method: str | None,
    user_agent: str | None,
    dry_run: bool,
) -> None:
    """Judge a new address against the session's binding; publish a violation.

    Prints one JSON object. Exit status 0: the binding holds; 3: violated (and, unless
    --dry-run, session.binding_violation was written to the outbox and published, which ends
    the session; "kept" instead of "published" when the broker did not answer).
    """
    from orchestrator.binding import BindingViolation
    from orchestrator.binding_check import BindingChecker
    from orchestrator.runtime import Runtime
    from schemas.errors import ConfigurationError
    from workers.relaying import command_relay, kept_message

    settings = _settings(ctx)
    request = _http_request(session_id, path, method, user_agent)
    if settings.geoip_city_db is None and settings.geoip_asn_db is None:
        raise ConfigurationError(
            "binding check needs geoip_city_db and/or geoip_asn_db (LOGOUT_GEOIP_CITY_DB, "
            "LOGOUT_GEOIP_ASN_DB)"
        )
    runtime = Runtime.start(settings)
    recorded: list[str] = []
    kept = False
    try:
        checker = BindingChecker(
            runtime.database,
            runtime.geoip(),
            settings.binding_unlisted_addresses,
            namespace=settings.namespace,
        )
        result = checker.check(session_id, ip, request=request, publish=False)
        if isinstance(result, BindingViolation) and not dry_run:
            event = result.event(session_id, request=request)
            with command_relay(settings, runtime) as relay:
                checker.record(event)
                recorded.append(str(event.event_id))
                report = relay.run()
            if report.error is not None:
                kept = True
                _console(stderr=True).print(kept_message(report), markup=False)
    finally:
        runtime.close()
    if isinstance(result, BindingViolation):
        output: dict[str, Any] = {
            "ok": False,
            "binding": result.binding.model_dump(mode="json"),
            "ip": result.ip.model_dump(mode="json"),
            "asn": result.asn.model_dump(mode="json"),
            "geo": result.geo.model_dump(mode="json"),
            "published": [] if kept else recorded,
            "kept": recorded if kept else [],
        }
    else:
        facts = result.facts
        output = {
            "ok": True,
            "ip": facts.ip,
            "asn": {"asn": facts.asn, "as_org": facts.as_org, "network": facts.network},
            "geo": {"continent": facts.continent, "country": facts.country, "city": facts.city},
        }
    click.echo(json.dumps(output, sort_keys=True))
    ctx.exit(0 if output["ok"] else 3)


def _http_request(
    session_id: str, path: str | None, method: str | None, user_agent: str | None
) -> HttpRequest:
    """The request ``binding check`` was given (its session id checked too); InputError
    naming each refused option."""
    from pydantic import TypeAdapter, ValidationError

    from orchestrator.validation import problems_from
    from schemas import HttpRequest
    from schemas.fields import Identifier

    problems = []
    try:
        TypeAdapter(Identifier).validate_python(session_id)
    except ValidationError as exc:
        problems += [Problem("--session", "", p.message) for p in problems_from(exc, "")]
    try:
        request = HttpRequest(path=path, method=method, user_agent=user_agent)
    except ValidationError as exc:
        problems += [
            Problem(f"--{p.field.replace('_', '-')}", "", p.message) for p in problems_from(exc, "")
        ]
    if problems:
        raise InputError(problems)
    return request


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
    list_audit(_settings(ctx), options)


@main.group()
def keys() -> None:
    """The IdP's logout-token signing keys (OIDC)."""


def _oidc(ctx: click.Context) -> OidcHandler:
    from orchestrator.handlers import build_handler
    from protocols.oidc import OidcHandler

    return build_handler(_settings(ctx), OidcHandler)


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

    settings = _settings(ctx)
    key = generate_key(Path(directory) if directory else settings.data_dir / "oidc-keys", alg)
    _console().print(f"kid {key.kid} ({key.alg}) written to {key.source}", markup=False)
    _console(stderr=True).print(
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

    sys.stdout.write(build_handler(_settings(ctx), SamlHandler).metadata().decode("utf-8") + "\n")


@main.group()
def config() -> None:
    """Settings."""


@config.command("show", logs=False, teardown=False)
@click.pass_context
def config_show(ctx: click.Context) -> None:
    """Print the effective settings as JSON, secrets redacted.

    URL passwords are masked, derived defaults show their value in force, and each duration
    is {"value": ..., "reading": "900 days"}.
    """
    sys.stdout.write(json.dumps(_settings(ctx).redacted(), indent=2, sort_keys=True) + "\n")


@main.group()
def db() -> None:
    """The database schema."""


@db.command("upgrade")
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Apply every pending migration (workers also do this at start when auto_migrate)."""
    from orchestrator.runtime import Runtime
    from orchestrator.store.migrate import upgrade

    runtime = Runtime.start(_settings(ctx), migrate=False, handlers={})
    try:
        upgrade(runtime.engine)
    finally:
        runtime.close()
    _console().print("database is up to date")


@main.command()
@click.option("--data-dir", type=click.Path(file_okay=False), help="Keep the demo's data here.")
@click.pass_context
def demo(ctx: click.Context, data_dir: str | None) -> None:
    """Run the demo on embedded defaults: memory broker, SQLite, sample data."""
    from workers.demo import run_demo

    ctx.exit(run_demo(_console(), data_dir))
