"""``sessions``: IdP sessions and provider sessions."""

from __future__ import annotations

import json

import click

from schemas.errors import InputError, Problem
from workers.cli.base import Actor, console, read_input, settings_of
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


#: The environment variable ``sessions device-check`` reads the device cookie id from.
DEVICE_ID_VARIABLE = "LOGOUT_DEVICE_ID"

#: The option of each field the engine names in a refusal.
_OPTIONS = {
    "user_id": "--user",
    "session_id": "--session",
    "keep_session_id": "--except",
    "device_id": "--device-id",
    "ip": "--ip",
}


def _with_options(exc: InputError) -> InputError:
    """The engine's refusal with each field named as the option that gave it."""
    return InputError(
        [Problem(_OPTIONS.get(p.field, p.field), "", p.message) for p in exc.problems]
    )


@sessions.command("list", teardown=False)
@click.option("--user", "user_id", help="Sessions of this user.")
@click.option("--ip", help="Sessions whose login came from this address.")
@click.option("--provider", help="Sessions with a provider session at this provider.")
@click.option("--ended", is_flag=True, help="Ended sessions too (with when and why they ended).")
@click.option(
    "--limit", type=click.IntRange(1), default=1000, show_default=True, help="At most this many."
)
@click.option("--json", "as_json", is_flag=True, help="JSON lines (one session each).")
@click.pass_context
def sessions_list(
    ctx: click.Context,
    user_id: str | None,
    ip: str | None,
    provider: str | None,
    ended: bool,
    limit: int,
    as_json: bool,
) -> None:
    """List open sessions, newest first, with their device, place and provider sessions.

    Give --user, --ip or --provider (together they narrow). Only reads: never migrates.
    """
    from orchestrator.runtime import Runtime
    from orchestrator.session_list import SessionFilter, list_sessions, provider_exists

    if user_id is None and ip is None and provider is None:
        raise InputError([Problem("--user / --ip / --provider", "", "give at least one of them")])
    where = SessionFilter(user_id, ip, provider, include_ended=ended, limit=limit)
    runtime = Runtime.for_reading(settings_of(ctx))
    try:
        lookup = runtime.geoip().lookup if runtime.has_geoip else None
        try:
            found = list_sessions(runtime.database, where, lookup)
        except InputError as exc:
            raise _with_options(exc) from None
        missing = provider is not None and not found
        unknown = missing and not provider_exists(runtime.database, str(provider))
    finally:
        runtime.close()
    if unknown:
        raise InputError(
            [Problem("--provider", "", f"no provider {provider!r} is loaded; see `providers list`")]
        )
    if as_json:
        from workers.cli.base import write_lines

        write_lines(view.model_dump_json() for view in found)
        return
    if not found:
        console(stderr=True).print(
            "no sessions match" + ("" if ended else " (open only; --ended for all)")
        )
        return
    from workers.session_table import session_table

    console().print(session_table(found))
    if len(found) == limit:
        console(stderr=True).print(f"showing the first {limit:,}; use --limit for more")


@sessions.command("revoke")
@click.option("--session", "session_id", help="Revoke this session (session.revoke).")
@click.option(
    "--user",
    "user_id",
    help="Revoke every open session of this user (user.revoke_all).",
)
@click.option(
    "--except",
    "keep",
    help="With --user: keep this session of theirs (session.terminate_others).",
)
@click.option(
    "--actor",
    type=Actor(),
    required=True,
    help="Who revokes (your admin id), for the audit trail.",
)
@click.option("--reason", help="With --session: why, for the audit trail.")
@click.pass_context
def sessions_revoke(
    ctx: click.Context,
    session_id: str | None,
    user_id: str | None,
    keep: str | None,
    actor: str,
    reason: str | None,
) -> None:
    """Publish the event that ends a session, or a user's sessions, with the full logout
    fan-out (initiator admin, --actor recorded in the event and the audit trail)."""
    from orchestrator.revoking import Revocations
    from orchestrator.runtime import Runtime
    from workers.cli.publish import publish_events

    settings = settings_of(ctx)
    _check_revoke_options(session_id, user_id, keep, reason)
    runtime = Runtime.start(settings, handlers={})
    try:
        revocations = Revocations(runtime.database)
        event = (
            revocations.session(session_id, actor=actor, reason=reason)
            if session_id is not None
            else revocations.user(str(user_id), keep=keep, actor=actor)
        )
    except InputError as exc:
        raise _with_options(exc) from None
    finally:
        runtime.close()
    refused = publish_events(settings, [event])
    console().print(f"published {event.type} {event.event_id} (actor {actor})", markup=False)
    for problem in refused:
        console(stderr=True).print(str(problem), markup=False)
    if refused:
        ctx.exit(int(ExitCode.INPUT))


def _check_revoke_options(
    session_id: str | None, user_id: str | None, keep: str | None, reason: str | None
) -> None:
    """Exactly one of --session and --user; --except only with --user, --reason only with
    --session."""
    problems = []
    if (session_id is None) == (user_id is None):
        problems.append(Problem("--session / --user", "", "give exactly one of them"))
    if keep is not None and user_id is None:
        problems.append(Problem("--except", "", "goes with --user (the session to keep)"))
    if reason is not None and session_id is None:
        problems.append(
            Problem("--reason", "", "goes with --session (user.revoke_all carries none)")
        )
    if problems:
        raise InputError(problems)


@sessions.command("device-check", teardown=False)
@click.option("--user", "user_id", required=True, help="The user logging in.")
@click.option(
    "--device-id",
    envvar=DEVICE_ID_VARIABLE,
    help=f"The device cookie id the browser holds, if any; - reads it from standard input. "
    f"Prefer ${DEVICE_ID_VARIABLE} or -: an argument is visible to every user of the machine.",
)
@click.option("--ip", help="The login's address.")
@click.pass_context
def sessions_device_check(
    ctx: click.Context, user_id: str, device_id: str | None, ip: str | None
) -> None:
    """Whether a login comes from a known device (remember_device), before it completes.

    Prints {"user_id", "known", "reason"} (reason: cookie, same_ip, unknown or off).
    Only reads: records nothing, publishes nothing. The cookie id is a bearer secret: give
    it in $LOGOUT_DEVICE_ID or on standard input (--device-id -), not on the command line.
    """
    from pydantic import TypeAdapter, ValidationError

    from orchestrator.runtime import Runtime
    from orchestrator.validation import problems_from
    from schemas import DeviceQuestion
    from schemas.fields import Identifier

    problems = []
    try:
        user = TypeAdapter(Identifier).validate_python(user_id)
    except ValidationError as exc:
        problems += [Problem("--user", "", p.message) for p in problems_from(exc, "")]
    try:
        question = DeviceQuestion(device_id=_device_id(device_id), ip=ip)
    except ValidationError as exc:
        problems += _with_options(InputError(problems_from(exc, ""))).problems
    if problems:
        raise InputError(problems)
    runtime = Runtime.for_reading(settings_of(ctx))
    try:
        verdict = runtime.device_check().check(user, device_id=question.device_id, ip=question.ip)
    finally:
        runtime.close()
    click.echo(json.dumps({"user_id": user, **verdict.model_dump()}))


def _device_id(given: str | None) -> str | None:
    """The device cookie id: ``-`` is the first line of standard input (a secret kept off
    the command line)."""
    if given != "-":
        return given
    lines = read_input("-").splitlines()
    if not lines or not lines[0].strip():
        message = (
            f"- reads the device cookie id from standard input, which is empty; pipe it in, "
            f"or set {DEVICE_ID_VARIABLE}"
        )
        raise InputError([Problem("--device-id", "", message)])
    return lines[0].strip()
