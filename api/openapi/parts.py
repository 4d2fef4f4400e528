"""The pieces every area's paths are made of: references to the components' schemas, JSON
answers, RFC 9457 problems, operations and their parameters."""

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
from schemas import DeviceQuestion, Event, LogoutPlan, SessionStarted

__all__ = [
    "BODY_ERRORS",
    "json_answer",
    "json_body",
    "operation",
    "path_param",
    "query_param",
    "ref",
    "schemas",
    "wait_param",
]

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
#: The problems of a route that reads a JSON body.
BODY_ERRORS: Final = (413, 415, 422)


def ref(name: str) -> dict[str, str]:
    """A reference to the component schema ``name``."""
    return {"$ref": _REF.format(model=name)}


def schemas() -> dict[str, Any]:
    """The components' schemas: every model above and the event contract."""
    _, top = models_json_schema([(model, "validation") for model in _MODELS], ref_template=_REF)
    found: dict[str, Any] = dict(top.get("$defs", {}))
    event = TypeAdapter(Event).json_schema(ref_template=_REF)
    found.update(event.pop("$defs", {}))
    found["Event"] = event
    return found


def json_answer(schema: dict[str, Any], description: str) -> dict[str, Any]:
    """A response whose body is JSON of ``schema``."""
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def json_body(model: str, *, required: bool = True) -> dict[str, Any]:
    """A request body of the component ``model``, as JSON."""
    return {"required": required, "content": {"application/json": {"schema": ref(model)}}}


def _problems(*statuses: int) -> dict[str, Any]:
    says = {
        400: "the body cannot be read",
        401: "no token, or not a configured one",
        403: "the token lacks the scope",
        404: "not found",
        409: "the resource's state forbids it",
        413: "the body exceeds api_body_limit",
        415: "not a JSON body",
        429: "too soon: Retry-After says when to ask again",
        422: "input refused: errors names each field (or query parameter)",
        502: "the receiver refused what was pushed to it",
        503: "a server it needs does not answer, or it is not configured",
    }
    problem = {"content": {"application/problem+json": {"schema": ref("ProblemBody")}}}
    return {str(s): {"description": says[s], **problem} for s in statuses}


def operation(
    summary: str,
    scope: str | None,
    responses: dict[str, Any],
    *,
    body: dict[str, Any] | None = None,
    parameters: list[dict[str, Any]] | None = None,
    errors: tuple[int, ...] = (),
) -> dict[str, Any]:
    """An operation: its token ``scope`` (None: public) adds 401 and 403 to ``errors``;
    every operation answers 422 to a query parameter it does not take
    (:mod:`api.query_params`)."""
    auth = (401, 403) if scope else ()
    made: dict[str, Any] = {
        "summary": summary,
        "responses": {**responses, **_problems(*sorted({*auth, *errors, 422}))},
    }
    made["security"] = [{"bearer": [scope]}] if scope else []
    if body is not None:
        made["requestBody"] = body
    if parameters:
        made["parameters"] = parameters
    return made


def path_param(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema}


def query_param(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


def wait_param(most: float) -> dict[str, Any]:
    """``?wait=``: seconds to long-poll, up to ``most`` (``api_wait_max``)."""
    return query_param(
        "wait",
        {"type": "number", "minimum": 0, "maximum": most},
        "seconds to wait for it (long poll)",
    )
