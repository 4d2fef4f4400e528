"""A user's sessions, for a self-service "your sessions" page and the login stage:

* ``GET /v1/users/{user_id}/sessions`` (scope ``read``): the open sessions, as
  ``sessions list`` shows them;
* ``DELETE /v1/users/{user_id}/sessions/{session_id}`` (scope ``events:write``): the user ends
  one of their sessions; a ``session.revoke`` (initiator ``user``, actor the user) goes the
  way of ``POST /v1/events`` (outbox, then broker). A session that is not that user's open
  session is a 404, whatever it is, so nothing is told about other users' sessions;
* ``POST /v1/users/{user_id}/device-check`` (scope ``sessions:write``, the login stage's):
  whether a login about to complete comes from a known device; read-only.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.body import read_model
from api.models import DeviceAnswer, RevokeAnswer, UserSessions
from api.path_params import identifier
from api.problems import ApiProblem
from api.service import Service
from orchestrator.revoking import Revocations
from orchestrator.session_list import SessionFilter, list_sessions
from schemas import DeviceQuestion

__all__ = ["routes"]


def routes(service: Service) -> list[Route]:
    limit = service.settings.api_body_limit

    async def get_sessions(request: Request) -> Response:
        service.auth.require(request, "read")
        user_id = identifier(request, "user_id")
        runtime = service.runtime
        lookup = runtime.geoip().lookup if runtime.has_geoip else None
        where = SessionFilter(user_id=user_id)
        found = await service.run(lambda: list_sessions(runtime.database, where, lookup))
        return JSONResponse(UserSessions(user_id=user_id, sessions=found).model_dump(mode="json"))

    async def delete_session(request: Request) -> Response:
        service.auth.require(request, "events:write")
        user_id = identifier(request, "user_id")
        session_id = identifier(request, "session_id")
        answer = await service.run(lambda: _revoke_own(service, user_id, session_id))
        return JSONResponse(answer.model_dump(mode="json"), 202)

    async def post_device_check(request: Request) -> Response:
        service.auth.require(request, "sessions:write")
        user_id = identifier(request, "user_id")
        body = await read_model(request, limit, DeviceQuestion, optional=False)
        check = service.runtime.device_check()
        verdict = await service.run(
            lambda: check.check(user_id, device_id=body.device_id, ip=body.ip)
        )
        answer = DeviceAnswer(user_id=user_id, known=verdict.known, reason=verdict.reason)
        return JSONResponse(answer.model_dump(mode="json"))

    return [
        Route("/v1/users/{user_id}/sessions", get_sessions, methods=["GET"], name="user_sessions"),
        Route(
            "/v1/users/{user_id}/sessions/{session_id}",
            delete_session,
            methods=["DELETE"],
            name="user_session",
        ),
        Route(
            "/v1/users/{user_id}/device-check",
            post_device_check,
            methods=["POST"],
            name="device_check",
        ),
    ]


def _revoke_own(service: Service, user_id: str, session_id: str) -> RevokeAnswer:
    event = Revocations(service.runtime.database).own(user_id, session_id)
    if event is None:
        raise ApiProblem(
            404,
            "no such session",
            f"user {user_id!r} has no open session {session_id!r}; list them with "
            f"GET /v1/users/{{user_id}}/sessions",
        )
    report = service.publisher.enqueue([event])
    return RevokeAnswer(event_id=str(event.event_id), session_id=session_id, queued=report.pending)
