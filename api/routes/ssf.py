"""The Shared Signals transmitter's HTTP side (SSF 1.0): its metadata at
``/.well-known/ssf-configuration`` and the JWKS its SETs are verified with (both public), and
stream management (§8.1) for receivers holding a token with scope ``ssf:streams``: each sees
and changes only the streams it registered.

Served only when the ``ssf`` handler is enabled (``protocols``).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.body import read_model
from api.service import Service
from api.ssf_streams import StatusUpdate, StreamRequest, Streams, SubjectRequest, VerifyRequest
from orchestrator.handlers import start_each
from protocols.ssf import PUSH_DELIVERY, SsfHandler
from schemas.errors import InputError, Problem

__all__ = ["metadata", "routes"]

_STREAMS = "/v1/ssf/stream"
_PATHS = {
    "jwks_uri": "/v1/ssf/jwks.json",
    "configuration_endpoint": _STREAMS,
    "status_endpoint": "/v1/ssf/status",
    "add_subject_endpoint": "/v1/ssf/subjects/add",
    "remove_subject_endpoint": "/v1/ssf/subjects/remove",
    "verification_endpoint": "/v1/ssf/verify",
}


def metadata(issuer: str, base_url: str) -> dict[str, Any]:
    """SSF 1.0 §7.1 transmitter configuration metadata; endpoints on ``base_url``."""
    base = base_url.rstrip("/")
    return {
        "spec_version": "1_0",
        "issuer": issuer,
        **{name: base + path for name, path in _PATHS.items()},
        "delivery_methods_supported": [PUSH_DELIVERY],
        "authorization_schemes": [{"spec_urn": "urn:ietf:rfc:6750"}],
    }


def _stream_id(request: Request) -> str | None:
    return request.query_params.get("stream_id") or None


def _required(request: Request) -> str:
    stream_id = _stream_id(request)
    if stream_id is None:
        raise InputError([Problem("query", "stream_id", "required: the stream's id")])
    return stream_id


class _Endpoints:
    """The endpoints, on one service and its started ``ssf`` handler."""

    def __init__(self, service: Service, handler: SsfHandler) -> None:
        self._service = service
        self._handler = handler
        self._streams = Streams(service.runtime, handler)
        self._limit = service.settings.api_body_limit

    def _owner(self, request: Request) -> str:
        return self._service.auth.require(request, "ssf:streams").name

    async def well_known(self, _request: Request) -> Response:
        # Never request.base_url: the Host header is the client's, and a cache in front
        # would hand a forged one's endpoints to every receiver.
        answer = metadata(self._service.settings.issuer, self._service.settings.public_url)
        answer["default_subjects"] = self._handler.settings.default_subjects
        return JSONResponse(answer)

    async def jwks(self, _request: Request) -> Response:
        return JSONResponse(self._handler.jwks())

    async def stream(self, request: Request) -> Response:
        who, run, streams = self._owner(request), self._service.run, self._streams
        if request.method == "GET":
            wanted = _stream_id(request)
            if wanted is None:
                return JSONResponse(await run(lambda: streams.listing(who)))
            return JSONResponse(await run(lambda: streams.read(who, wanted)))
        if request.method == "DELETE":
            stream_id = _required(request)
            await run(lambda: streams.delete(who, stream_id))
            return Response(status_code=204)
        body = await read_model(request, self._limit, StreamRequest, optional=False)
        if request.method == "POST":
            return JSONResponse(await run(lambda: streams.create(who, body)), 201)
        replace = request.method == "PUT"
        return JSONResponse(await run(lambda: streams.update(who, body, replace=replace)))

    async def status(self, request: Request) -> Response:
        who, streams = self._owner(request), self._streams
        if request.method == "GET":
            stream_id = _required(request)
            return JSONResponse(await self._service.run(lambda: streams.status(who, stream_id)))
        body = await read_model(request, self._limit, StatusUpdate, optional=False)
        return JSONResponse(await self._service.run(lambda: streams.set_status(who, body)))

    async def add_subject(self, request: Request) -> Response:
        await self._subject(request, add=True)
        return Response(status_code=200)

    async def remove_subject(self, request: Request) -> Response:
        await self._subject(request, add=False)
        return Response(status_code=204)

    async def _subject(self, request: Request, *, add: bool) -> None:
        who = self._owner(request)
        body = await read_model(request, self._limit, SubjectRequest, optional=False)
        await self._service.run(lambda: self._streams.subject(who, body, add=add))

    async def verify(self, request: Request) -> Response:
        who = self._owner(request)
        body = await read_model(request, self._limit, VerifyRequest, optional=False)
        await self._service.run(lambda: self._streams.verify(who, body))
        return Response(status_code=204)


def routes(service: Service) -> list[Route]:
    handler = service.runtime.handlers.get("ssf")
    if not isinstance(handler, SsfHandler):
        return []
    start_each({"ssf": handler})  # the signing keys, loaded (or generated) now, not on a request
    ends = _Endpoints(service, handler)
    every = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    return [
        Route("/.well-known/ssf-configuration", ends.well_known, methods=["GET"], name="ssf_meta"),
        Route(_PATHS["jwks_uri"], ends.jwks, methods=["GET"], name="ssf_jwks"),
        Route(_STREAMS, ends.stream, methods=every, name="ssf_stream"),
        Route(_PATHS["status_endpoint"], ends.status, methods=["GET", "POST"], name="ssf_status"),
        Route(_PATHS["add_subject_endpoint"], ends.add_subject, methods=["POST"], name="ssf_add"),
        Route(
            _PATHS["remove_subject_endpoint"],
            ends.remove_subject,
            methods=["POST"],
            name="ssf_remove",
        ),
        Route(_PATHS["verification_endpoint"], ends.verify, methods=["POST"], name="ssf_verify"),
    ]
