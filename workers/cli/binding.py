"""``binding check``: judge an address against a session's binding."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from schemas.errors import InputError, Problem
from workers.cli.base import console, settings_of
from workers.cli.root import main

if TYPE_CHECKING:
    from schemas import HttpRequest


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

    settings = settings_of(ctx)
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
                console(stderr=True).print(kept_message(report), markup=False)
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
