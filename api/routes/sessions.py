"""Session activity and the binding check, for IdP middleware (scope ``sessions:write``):

* ``POST /v1/sessions``: a login started a session (the body is a ``session.started`` event);
* ``POST /v1/sessions/{session_id}/seen``: the session was seen (``{"at": ...}`` optional);
* ``POST /v1/sessions/{session_id}/binding-check``: judge a request's address; a violation is
  written to the outbox and published (the session then ends with the full logout fan-out).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.body import read_json, read_model
from api.models import BindingCheck, BindingVerdict, Seen, SeenAnswer, SessionAnswer
from api.path_params import identifier
from api.problems import ApiProblem
from api.service import Service
from orchestrator.binding import BindingViolation
from orchestrator.binding.geoip import InvalidAddressError
from orchestrator.validation import parse_event
from schemas import HttpRequest, SessionStarted
from schemas.errors import InputError, Problem

__all__ = ["routes"]


def _not_open(session_id: str) -> ApiProblem:
    return ApiProblem(
        404,
        "no open session",
        f"session {session_id!r} is not known or has ended; report its start with "
        "POST /v1/sessions",
    )


def routes(service: Service) -> list[Route]:
    limit = service.settings.api_body_limit

    async def post_session(request: Request) -> Response:
        service.auth.require(request, "sessions:write")
        raw, _ = await read_json(request, limit)
        event = parse_event(raw, "body")
        if not isinstance(event, SessionStarted):
            raise InputError(
                [Problem("body", "type", f"must be 'session.started' here, not {event.type!r}")]
            )
        activity = service.runtime.activity(service.relay.run)
        revoked = await service.run(lambda: activity.started(event))
        answer = SessionAnswer(session_id=event.session_id, revoked=[r.session_id for r in revoked])
        return JSONResponse(answer.model_dump(mode="json"), 201)

    async def post_seen(request: Request) -> Response:
        service.auth.require(request, "sessions:write")
        session_id = identifier(request, "session_id")
        body = await read_model(request, limit, Seen, optional=True)
        activity = service.runtime.activity()
        if not await service.run(lambda: activity.seen(session_id, body.at)):
            raise _not_open(session_id)
        return JSONResponse(SeenAnswer(session_id=session_id, open=True).model_dump())

    async def post_binding_check(request: Request) -> Response:
        service.auth.require(request, "sessions:write")
        session_id = identifier(request, "session_id")
        body = await read_model(request, limit, BindingCheck, optional=False)
        verdict = await service.run(lambda: _check(service, session_id, body))
        return JSONResponse(verdict.model_dump(mode="json"))

    return [
        Route("/v1/sessions", post_session, methods=["POST"], name="sessions"),
        Route("/v1/sessions/{session_id}/seen", post_seen, methods=["POST"], name="seen"),
        Route(
            "/v1/sessions/{session_id}/binding-check",
            post_binding_check,
            methods=["POST"],
            name="binding_check",
        ),
    ]


def _check(service: Service, session_id: str, body: BindingCheck) -> BindingVerdict:
    checker = service.checker()
    request = HttpRequest(path=body.path, method=body.method, user_agent=body.user_agent)
    try:
        result = checker.check(session_id, body.ip, request=request, publish=False)
    except InvalidAddressError:
        raise InputError([Problem("body", "ip", "not an IPv4 or IPv6 address")]) from None
    except InputError as exc:
        if any(p.field == "session_id" for p in exc.problems):
            raise _not_open(session_id) from None
        raise
    if not isinstance(result, BindingViolation):
        return BindingVerdict(ok=True, session_id=session_id, published=False)
    event = result.event(session_id, request=request)
    try:
        checker.record(event)
    except InputError:  # ended meanwhile
        raise _not_open(session_id) from None
    report = service.relay.run([str(event.event_id)])
    return BindingVerdict(
        ok=False,
        session_id=session_id,
        reason=event.binding.reason,
        event_id=str(event.event_id),
        published=report.error is None,
    )
