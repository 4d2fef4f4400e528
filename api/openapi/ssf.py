"""The Shared Signals paths: the transmitter's metadata, keys and stream management
(:mod:`api.routes.ssf`), served when the ``ssf`` handler is enabled, and the receiver's push
endpoint (:mod:`api.routes.ssf_push`), always served."""

from __future__ import annotations

from typing import Any, Final

from api.openapi.parts import json_answer, operation, path_param, ref
from protocols.ssf.receiving import SET_MEDIA_TYPE, ErrorCode

__all__ = ["ssf_paths", "ssf_push_path"]

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
        (404, 409, 429, 502),
    ),
)


def ssf_paths() -> dict[str, Any]:
    """The Shared Signals transmitter's routes."""
    anything = {"type": "object"}
    paths: dict[str, Any] = {
        "/.well-known/ssf-configuration": {
            "get": operation("SSF transmitter metadata", None, {"200": json_answer(anything, "it")})
        },
        "/v1/ssf/jwks.json": {
            "get": operation(
                "The keys SETs are signed with", None, {"200": json_answer(anything, "it")}
            )
        },
    }
    for path, method, summary, status, answer, given, errors in _SSF_OPERATIONS:
        success = json_answer(anything, f"the {answer}") if answer else {"description": "done"}
        extra: dict[str, Any] = {}
        if given in ("required", "optional"):
            query = {"name": "stream_id", "in": "query", "schema": {"type": "string"}}
            extra["parameters"] = [{**query, "required": given == "required"}]
            errors = (*errors, 422) if given == "required" else errors
        else:
            schema = {"application/json": {"schema": ref(given)}}
            extra["body"] = {"required": True, "content": schema}
            errors = (*errors, 413, 415, 422)
        made = operation(summary, "ssf:streams", {status: success}, **extra, errors=errors)
        paths.setdefault(path, {})[method] = made
    return paths


def ssf_push_path() -> dict[str, Any]:
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
    made = operation(
        "Receive a Security Event Token from an upstream transmitter (RFC 8935)",
        None,
        {
            "202": {"description": "verified; what it asks is published"},
            **{status: json_answer(refused, text) for status, text in says.items()},
        },
        body={"required": True, "content": {SET_MEDIA_TYPE: {"schema": {"type": "string"}}}},
        parameters=[path_param("stream", {"type": "string", "minLength": 1, "maxLength": 64})],
        errors=(404, 413, 503),
    )
    made["security"] = [{}, {"bearer": []}]
    return {"post": made}
