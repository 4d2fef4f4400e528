"""The HTTP service's parts without a server: tokens, metrics from audit records, the
OpenAPI document."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner
from openapi_spec_validator import validate
from prometheus_client import REGISTRY
from sqlalchemy.exc import IntegrityError, OperationalError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient
from structlog.testing import capture_logs

from api.app import _Measured
from api.auth import Authenticator
from api.openapi import openapi_document
from api.problems import RETRY_AFTER, ApiProblem, exception_handlers
from orchestrator.api_tokens import SCOPES, ApiToken, hash_token, new_token
from orchestrator.metrics import count_records, scrape
from orchestrator.settings import Settings
from schemas import AuditRecord, AuditType
from workers.cli import main


def _request(authorization: str | None) -> Request:
    headers = [(b"authorization", authorization.encode())] if authorization is not None else []
    return Request({"type": "http", "method": "GET", "path": "/", "headers": headers})


def test_tokens_are_held_as_hashes_and_checked_with_their_scopes() -> None:
    """The configured hash admits its token with its scopes only; others are 401 / 403."""
    token = new_token()
    auth = Authenticator(
        [
            ApiToken(name="other", sha256=hash_token("x" * 43), scopes=["events:write"]),
            ApiToken(name="reader", sha256=hash_token(token), scopes=["read"]),
        ]
    )
    assert auth.require(_request(f"Bearer {token}"), "read").name == "reader"
    with pytest.raises(ApiProblem) as forbidden:
        auth.require(_request(f"Bearer {token}"), "events:write")
    assert forbidden.value.status == 403
    for header in (None, "", f"Basic {token}", "Bearer ", "Bearer wrong", f"Bearer {token}x"):
        with pytest.raises(ApiProblem) as refused:
            auth.require(_request(header), "read")
        assert refused.value.status == 401, header
        assert refused.value.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_token_in_the_settings_is_refused_unless_a_hash() -> None:
    """api_tokens holds a SHA-256 (64 hex digits), never the token; the error names it."""
    with pytest.raises(ValueError, match="api_tokens"):
        Settings(api_tokens=[{"name": "idp", "sha256": new_token(), "scopes": ["read"]}])
    with pytest.raises(ValueError, match="scopes"):
        Settings(api_tokens=[{"name": "idp", "sha256": "a" * 64, "scopes": ["admin"]}])


def _record(kind: AuditType, outcome: str, **detail: object) -> AuditRecord:
    return AuditRecord(
        id="r", at=datetime.now(UTC), type=kind, outcome=outcome, provider="wiki", detail=detail
    )


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_audit_records_move_the_metrics() -> None:
    """Deliveries by protocol, provider and status, roll-ups by outcome, events by type; an
    unknown event type is 'other' (a publisher cannot add label values)."""
    delivered = {"protocol": "oidc", "provider": "wiki", "status": "succeeded"}
    before = _value("logout_deliveries_total", **delivered)
    partial = _value("logout_logouts_completed_total", outcome="partial")
    other = _value("logout_events_total", type="other", outcome="rejected")
    count_records(
        [
            _record(AuditType.DELIVERY_SUCCEEDED, "succeeded", protocol="oidc"),
            _record(AuditType.LOGOUT_COMPLETED, "partial", type="logout.user"),
            _record(AuditType.EVENT_REJECTED, "rejected", type="made.up"),
        ]
    )
    assert _value("logout_deliveries_total", **delivered) == before + 1
    assert _value("logout_logouts_completed_total", outcome="partial") == partial + 1
    assert _value("logout_events_total", type="other", outcome="rejected") == other + 1


def test_openapi_document_is_valid() -> None:
    """The generated document validates and refers only to schemas it holds."""
    document = openapi_document(12.5)
    validate(document)
    wait = document["paths"]["/v1/plans/{plan_id}"]["get"]["parameters"][1]
    assert wait["schema"]["maximum"] == 12.5
    assert {"Event", "EventsAnswer", "LogoutPlan", "ProblemBody"} <= set(
        document["components"]["schemas"]
    )


def test_api_token_prints_a_token_and_only_its_hash_for_the_settings() -> None:
    """``api token`` gives the token once and an api_tokens entry holding its SHA-256."""
    result = CliRunner().invoke(
        main, ["api", "token", "--scope", "read", "--scope", "events:write", "--name", "idp"]
    )
    assert result.exit_code == 0, result.output
    token_line, entry_line = result.output.splitlines()
    token = token_line.removeprefix("token: ")
    entry = json.loads(entry_line.removeprefix("api_tokens entry: "))
    assert entry == {"name": "idp", "scopes": ["events:write", "read"], "sha256": hash_token(token)}
    assert token not in entry_line
    Settings(api_tokens=[entry])


def test_a_bug_is_a_problem_and_its_message_is_never_logged() -> None:
    """An unexpected error answers a 500 problem; the log names its type only (a database
    error's message would carry the input's values)."""

    async def broken(_request: Request) -> Response:
        raise RuntimeError("INSERT ... [parameters: ('secret-session',)]")

    routes = [Route("/broken", broken)]
    app = Starlette(routes=routes, exception_handlers=exception_handlers())  # type: ignore[arg-type]
    app.add_middleware(_Measured, routes=routes)
    with capture_logs() as logs, TestClient(app, raise_server_exceptions=False) as client:
        answer = client.get("/broken")
    assert answer.status_code == 500
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["title"] == "internal error"
    assert logs == [{"event": "internal error", "error_type": "RuntimeError", "log_level": "error"}]
    assert "secret-session" not in answer.text


def _app_raising(error: Exception) -> TestClient:
    async def failing(_request: Request) -> Response:
        raise error

    routes = [Route("/failing", failing)]
    app = Starlette(routes=routes, exception_handlers=exception_handlers())  # type: ignore[arg-type]
    app.add_middleware(_Measured, routes=routes)
    return TestClient(app, raise_server_exceptions=False)


def test_a_database_outage_is_a_503_problem_without_the_driver_message() -> None:
    """OperationalError answers 503 with Retry-After; neither the answer nor the log carries
    the driver's text (it can hold the statement's parameters)."""
    error = OperationalError("SELECT ... [parameters: ('secret-session',)]", {}, Exception("x"))
    with capture_logs() as logs, _app_raising(error) as client:
        answer = client.get("/failing")
    assert answer.status_code == 503, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.headers["retry-after"] == RETRY_AFTER
    assert answer.json()["title"] == "unavailable"
    assert "secret-session" not in answer.text
    assert logs == [
        {"event": "database unavailable", "error_type": "OperationalError", "log_level": "warning"}
    ]


def test_a_refused_write_stays_a_bug() -> None:
    """An IntegrityError is no outage: a 500 problem naming nothing of the statement."""
    error = IntegrityError("INSERT ... [parameters: ('secret-session',)]", {}, Exception("x"))
    with _app_raising(error) as client:
        answer = client.get("/failing")
    assert answer.status_code == 500, answer.text
    assert "secret-session" not in answer.text


def test_gauges_are_left_out_when_the_database_is_down() -> None:
    """A scrape with the database down still serves the counters, without the gauges."""

    class _Down:
        def __call__(self) -> object:
            raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    with capture_logs() as logs:
        body = scrape(_Down()).decode()  # type: ignore[arg-type]
    assert "logout_events_total" in body
    assert "logout_deliveries_retrying" not in body
    assert logs == [
        {
            "event": "delivery gauges left out",
            "error_type": "OperationalError",
            "log_level": "warning",
        }
    ]


def test_api_token_offers_exactly_the_scopes_a_token_can_hold() -> None:
    """``api token --scope`` takes every scope of SCOPES and refuses any other word."""
    for scope in SCOPES:
        assert CliRunner().invoke(main, ["api", "token", "--scope", scope]).exit_code == 0
    refused = CliRunner().invoke(main, ["api", "token", "--scope", "admin"])
    assert refused.exit_code == 2
    assert "events:write" in refused.output


def test_echoed_values_are_clipped_in_every_problem() -> None:
    """A long value a message repeats is cut to its first 100 characters and its length;
    the words around it, and possessives' apostrophes, are kept."""
    from api.problems import clip, problem_response
    from schemas.errors import Problem

    said = clip(f"no provider named {'a b' * 2000!r}; list them")
    assert said == f"no provider named '{'a b' * 33}a…' (6000 characters); list them"
    assert clip("y" * 150 + " left") == "y" * 100 + "… (150 characters) left"
    prose = "this token's streams " + "and more words " * 10 + "the user's own"
    assert clip(prose) == prose
    answer = problem_response(
        422, "input refused", f"plan {'p' * 300!r}", [Problem("query", "k" * 3000, "x" * 9000)]
    )
    assert len(answer.body) < 1000
    assert b"(3000 characters)" in answer.body
    assert b"(9000 characters)" in answer.body


def test_clip_reads_quotes_and_backslashes_once() -> None:
    """A text of quotes and backslashes (a query parameter's name, unauthenticated) made the
    pattern search on from every quote: quadratic, seconds for 16 KB. The tokens now: a
    quote never closed is read as words, its long runs cut; a closed one as a value."""
    from api.problems import clip

    hostile = "\\'" * 8000  # no long value in it: its start and end are kept
    assert clip(hostile) == f"{hostile[:1000]}… (16000 characters) …{hostile[-500:]}"
    assert clip("'" * 300) == "'" * 300  # empty quoted values, each short
    unclosed = "no provider named 'abc" + "x" * 200 + " and more; it takes a, b"
    assert clip(unclosed) == (
        "no provider named 'abc" + "x" * 97 + "… (203 characters) and more; it takes a, b"
    )


def test_a_long_unknown_query_parameter_is_named_cut_and_not_matched() -> None:
    from api.query_params import query_problems

    (problem,) = query_problems([("q" * 5000, "1")], {"limit": False})
    assert problem.field == "q" * 100 + "… (5000 characters)"
    assert problem.message == "not a parameter of this endpoint; it takes limit"
