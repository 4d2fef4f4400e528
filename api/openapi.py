"""``/v1/openapi.json``: the OpenAPI 3.1 document, generated from the pydantic models of
:mod:`api.models` and the event contract (:data:`schemas.Event`)."""

from __future__ import annotations

from typing import Any, Final

from pydantic import TypeAdapter
from pydantic.json_schema import models_json_schema

from api.models import (
    BindingCheck,
    BindingVerdict,
    DeliveriesAnswer,
    DeviceAnswer,
    EventsAnswer,
    Health,
    LogoutAnswer,
    ProblemBody,
    ProvidersAnswer,
    RejectedAnswer,
    RevokeAnswer,
    Seen,
    SeenAnswer,
    SessionAnswer,
    UserSessions,
)
from api.ssf_streams import StatusUpdate, StreamRequest, SubjectRequest, VerifyRequest
from protocols.ssf.receiving import SET_MEDIA_TYPE, ErrorCode
from schemas import DeviceQuestion, Event, LogoutPlan, SessionStarted

__all__ = ["openapi_document"]

_REF: Final = "#/components/schemas/{model}"
_MODELS: Final = (
    BindingCheck,
    BindingVerdict,
    DeviceAnswer,
    DeviceQuestion,
    DeliveriesAnswer,
    EventsAnswer,
    Health,
    LogoutAnswer,
    LogoutPlan,
    ProblemBody,
    RevokeAnswer,
    ProvidersAnswer,
    RejectedAnswer,
    Seen,
    SeenAnswer,
    SessionAnswer,
    SessionStarted,
    UserSessions,
    StatusUpdate,
    StreamRequest,
    SubjectRequest,
    VerifyRequest,
)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(model=name)}


def _schemas() -> dict[str, Any]:
    _, top = models_json_schema([(model, "validation") for model in _MODELS], ref_template=_REF)
    schemas: dict[str, Any] = dict(top.get("$defs", {}))
    event = TypeAdapter(Event).json_schema(ref_template=_REF)
    schemas.update(event.pop("$defs", {}))
    schemas["Event"] = event
    return schemas


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _problems(*statuses: int) -> dict[str, Any]:
    says = {
        400: "the body cannot be read",
        401: "no token, or not a configured one",
        403: "the token lacks the scope",
        404: "not found",
        409: "the resource's state forbids it",
        413: "the body exceeds api_body_limit",
        415: "not a JSON body",
        422: "input refused: errors names each field",
        502: "the receiver refused what was pushed to it",
        503: "a server it needs does not answer, or it is not configured",
    }
    problem = {"content": {"application/problem+json": {"schema": _ref("ProblemBody")}}}
    return {str(s): {"description": says[s], **problem} for s in statuses}


def _operation(
    summary: str,
    scope: str | None,
    responses: dict[str, Any],
    *,
    body: dict[str, Any] | None = None,
    parameters: list[dict[str, Any]] | None = None,
    errors: tuple[int, ...] = (),
) -> dict[str, Any]:
    auth = (401, 403) if scope else ()
    operation: dict[str, Any] = {
        "summary": summary,
        "responses": {**responses, **_problems(*sorted({*auth, *errors}))},
    }
    operation["security"] = [{"bearer": [scope]}] if scope else []
    if body is not None:
        operation["requestBody"] = body
    if parameters:
        operation["parameters"] = parameters
    return operation


def _path(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _wait(most: float) -> dict[str, Any]:
    return {
        "name": "wait",
        "in": "query",
        "required": False,
        "description": "seconds to wait for it (long poll)",
        "schema": {"type": "number", "minimum": 0, "maximum": most},
    }


def _user_paths(body_errors: tuple[int, ...]) -> dict[str, Any]:
    """A user's sessions: the self-service page's listing and revocation, and the login
    stage's remember-device question."""
    identifier = {"type": "string", "minLength": 1, "maxLength": 255}
    user_id = _path("user_id", identifier)
    return {
        "/v1/users/{user_id}/sessions": {
            "get": _operation(
                "The user's open sessions, newest first (a self-service sessions page)",
                "read",
                {"200": _json(_ref("UserSessions"), "the sessions")},
                parameters=[user_id],
                errors=(422,),
            )
        },
        "/v1/users/{user_id}/sessions/{session_id}": {
            "delete": _operation(
                "The user ends one of their sessions (session.revoke, initiator user)",
                "events:write",
                {"202": _json(_ref("RevokeAnswer"), "accepted: the logout follows")},
                parameters=[user_id, _path("session_id", identifier)],
                errors=(404, 422),
            )
        },
        "/v1/users/{user_id}/device-check": {
            "post": _operation(
                "Whether a login about to complete comes from a known device (read-only)",
                "sessions:write",
                {"200": _json(_ref("DeviceAnswer"), "the verdict")},
                body={
                    "required": True,
                    "content": {"application/json": {"schema": _ref("DeviceQuestion")}},
                },
                parameters=[user_id],
                errors=body_errors,
            )
        },
    }


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


def _operator_paths() -> dict[str, Any]:
    """The operator's read-only views (:mod:`api.routes.operations`)."""
    since = _query("since", {"type": "string"}, "at or after this time (RFC 3339, or a date)")
    limit = _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "the latest N")
    statuses = ["pending", "retrying", "succeeded", "failed", "skipped"]
    return {
        "/v1/deliveries": {
            "get": _operation(
                "Deliveries, the latest first cut to limit, listed oldest first",
                "read",
                {"200": _json(_ref("DeliveriesAnswer"), "the deliveries")},
                parameters=[
                    _query("status", {"type": "string", "enum": statuses}, "in this status"),
                    _query("provider", {"type": "string"}, "to this provider"),
                    _query("event", {"type": "string"}, "of this event (its id or a start)"),
                    since,
                    limit,
                ],
                errors=(422,),
            )
        },
        "/v1/rejected-events": {
            "get": _operation(
                "Rejected events with their problems",
                "read",
                {"200": _json(_ref("RejectedAnswer"), "the rejected events")},
                parameters=[since, limit],
                errors=(422,),
            )
        },
        "/v1/providers": {
            "get": _operation(
                "Providers: protocol, method, enabled, open provider sessions",
                "read",
                {"200": _json(_ref("ProvidersAnswer"), "the providers")},
            )
        },
    }


#: The Shared Signals routes (:mod:`api.routes.ssf`), scope ``ssf:streams``: path, method,
#: summary, success status and what it answers, the request body's model or the query's
#: ``stream_id`` (``"required"``, ``"optional"``), and the problems besides 401 and 403.
_SSF_OPERATIONS: Final = (
    ("/v1/ssf/stream", "post", "Register a stream", "201", "configuration", "StreamRequest", ()),
    (
        "/v1/ssf/stream",
        "get",
        "One of the token's streams, or all",
        "200",
        "configuration",
        "optional",
        (404,),
    ),
    ("/v1/ssf/stream", "patch", "Update a stream", "200", "configuration", "StreamRequest", (404,)),
    ("/v1/ssf/stream", "put", "Replace a stream", "200", "configuration", "StreamRequest", (404,)),
    ("/v1/ssf/stream", "delete", "Delete a stream", "204", "", "required", (404,)),
    ("/v1/ssf/status", "get", "A stream's status", "200", "status", "required", (404,)),
    (
        "/v1/ssf/status",
        "post",
        "Enable, pause or disable a stream",
        "200",
        "status",
        "StatusUpdate",
        (404,),
    ),
    (
        "/v1/ssf/subjects/add",
        "post",
        "Tell the stream of a user's ended sessions",
        "200",
        "",
        "SubjectRequest",
        (404,),
    ),
    (
        "/v1/ssf/subjects/remove",
        "post",
        "Stop telling the stream of a user",
        "204",
        "",
        "SubjectRequest",
        (404,),
    ),
    (
        "/v1/ssf/verify",
        "post",
        "Push the verification SET to the stream",
        "204",
        "",
        "VerifyRequest",
        (404, 409, 502),
    ),
)


def _ssf_paths() -> dict[str, Any]:
    """The Shared Signals transmitter's routes."""
    anything = {"type": "object"}
    paths: dict[str, Any] = {
        "/.well-known/ssf-configuration": {
            "get": _operation("SSF transmitter metadata", None, {"200": _json(anything, "it")})
        },
        "/v1/ssf/jwks.json": {
            "get": _operation("The keys SETs are signed with", None, {"200": _json(anything, "it")})
        },
    }
    for path, method, summary, status, answer, given, errors in _SSF_OPERATIONS:
        success = _json(anything, f"the {answer}") if answer else {"description": "done"}
        extra: dict[str, Any] = {}
        if given in ("required", "optional"):
            query = {"name": "stream_id", "in": "query", "schema": {"type": "string"}}
            extra["parameters"] = [{**query, "required": given == "required"}]
            errors = (*errors, 422) if given == "required" else errors
        else:
            schema = {"application/json": {"schema": _ref(given)}}
            extra["body"] = {"required": True, "content": schema}
            errors = (*errors, 413, 415, 422)
        operation = _operation(summary, "ssf:streams", {status: success}, **extra, errors=errors)
        paths.setdefault(path, {})[method] = operation
    return paths


def _ssf_push() -> dict[str, Any]:
    """``POST /v1/ssf/push/{stream}``: its refusals are RFC 8935's ``{err, description}``,
    not problems, and its bearer token is the stream's own (``push_token_sha256``)."""
    refused = {
        "type": "object",
        "required": ["err", "description"],
        "properties": {
            "err": {"enum": list(ErrorCode.__args__)},  # type: ignore[attr-defined]
            "description": {"type": "string"},
        },
    }
    says = {
        "400": "the SET is refused (err names why)",
        "401": "authentication_failed: the stream's push token is missing or wrong",
        "403": "access_denied: the stream is disabled",
    }
    operation = _operation(
        "Receive a Security Event Token from an upstream transmitter (RFC 8935)",
        None,
        {
            "202": {"description": "verified; what it asks is published"},
            **{status: _json(refused, text) for status, text in says.items()},
        },
        body={"required": True, "content": {SET_MEDIA_TYPE: {"schema": {"type": "string"}}}},
        parameters=[_path("stream", {"type": "string", "minLength": 1, "maxLength": 64})],
        errors=(404, 413, 503),
    )
    operation["security"] = [{}, {"bearer": []}]
    return {"post": operation}


def openapi_document(wait_max: float = 30.0, *, ssf: bool = False) -> dict[str, Any]:
    """The document; ``wait_max`` is the largest ``?wait=`` accepted (``api_wait_max``);
    ``ssf``: the Shared Signals routes are served (the ``ssf`` handler is enabled)."""
    event = _ref("Event")
    body_errors = (413, 415, 422)
    session_id = _path("session_id", {"type": "string", "minLength": 1, "maxLength": 255})
    paths = {
        "/v1/events": {
            "post": _operation(
                "Publish events: recorded durably, then enqueued",
                "events:write",
                {
                    "202": _json(_ref("EventsAnswer"), "some events were new: accepted"),
                    "200": _json(_ref("EventsAnswer"), "every event was known: its state"),
                },
                body={
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"oneOf": [event, {"type": "array", "items": event}]}
                        },
                        "application/x-ndjson": {"schema": {"type": "string"}},
                    },
                },
                errors=body_errors,
            )
        },
        "/v1/logouts/{event_id}": {
            "get": _operation(
                "A logout's state and deliveries; ?wait= until it completes",
                "read",
                {"200": _json(_ref("LogoutAnswer"), "the logout")},
                parameters=[
                    _path("event_id", {"type": "string", "format": "uuid"}),
                    _wait(wait_max),
                ],
                errors=(404, 422),
            )
        },
        "/v1/logouts/{event_id}/timeline": {
            "get": _operation(
                "A logout as a timeline for operators: an HTML page (no script)",
                "read",
                {
                    "200": {
                        "description": "the page: received, steps, each delivery's attempts",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    }
                },
                parameters=[_path("event_id", {"type": "string", "format": "uuid"})],
                errors=(404, 422),
            )
        },
        "/v1/plans/{plan_id}": {
            "get": _operation(
                "A front-channel stage plan; ?wait= until it is built",
                "read",
                {"200": _json(_ref("LogoutPlan"), "the plan")},
                parameters=[
                    _path("plan_id", {"type": "string", "minLength": 1, "maxLength": 255}),
                    _wait(wait_max),
                ],
                errors=(404, 422),
            )
        },
        "/v1/sessions": {
            "post": _operation(
                "A login started a session (a session.started event)",
                "sessions:write",
                {"201": _json(_ref("SessionAnswer"), "recorded")},
                body={
                    "required": True,
                    "content": {"application/json": {"schema": _ref("SessionStarted")}},
                },
                errors=body_errors,
            )
        },
        "/v1/sessions/{session_id}/seen": {
            "post": _operation(
                "The session was seen (activity)",
                "sessions:write",
                {"200": _json(_ref("SeenAnswer"), "recorded")},
                body={"required": False, "content": {"application/json": {"schema": _ref("Seen")}}},
                parameters=[session_id],
                errors=(404, *body_errors),
            )
        },
        "/v1/sessions/{session_id}/binding-check": {
            "post": _operation(
                "Judge a request's address against the session's binding",
                "sessions:write",
                {"200": _json(_ref("BindingVerdict"), "the verdict")},
                body={
                    "required": True,
                    "content": {"application/json": {"schema": _ref("BindingCheck")}},
                },
                parameters=[session_id],
                errors=(404, *body_errors, 503),
            )
        },
        **_user_paths(body_errors),
        **_operator_paths(),
        "/v1/ssf/push/{stream}": _ssf_push(),
        "/healthz": {
            "get": _operation("The process lives", None, {"200": _json(_ref("Health"), "ok")})
        },
        "/readyz": {
            "get": _operation(
                "Database, schema and broker answer",
                None,
                {"200": _json(_ref("Health"), "ready")},
                errors=(503,),
            )
        },
        "/metrics": {
            "get": _operation(
                "Prometheus metrics (public when metrics_public)",
                "read",
                {
                    "200": {
                        "description": "the text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            )
        },
    }
    if ssf:
        paths.update(_ssf_paths())
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "logout-orchestrator",
            "version": "1",
            "description": "Ingestion, waits, binding checks, users' sessions, operators' "
            "views, Shared Signals (push receiver, transmitter streams), health and metrics.",
        },
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
