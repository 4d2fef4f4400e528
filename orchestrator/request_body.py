"""Reading an HTTP request's body within a cap: one implementation for the HTTP service
(:mod:`api.body`) and the front-channel pages (:mod:`orchestrator.frontchannel.requests`).

A ``Content-Length`` over the cap is refused before anything is read (``413``), one that is
no number is refused as a bad header (``400``), and a body sent without one (chunked) is
refused as soon as what arrived exceeds the cap (``413``).
"""

from __future__ import annotations

from starlette.requests import Request

from schemas.errors import LogoutError

__all__ = ["BodyRefusedError", "media_type", "read_body"]


class BodyRefusedError(LogoutError):
    """The body cannot be read: ``status`` (400, 413), ``field`` (the header at fault, or
    ``body``) and ``message`` (what to do)."""

    def __init__(self, status: int, field: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.field = field
        self.message = message


def media_type(request: Request) -> str:
    """The request's media type, lower-cased, without parameters."""
    return request.headers.get("content-type", "").partition(";")[0].strip().lower()


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with :class:`BodyRefusedError` as soon as it exceeds ``limit``
    bytes or its ``Content-Length`` is no number."""
    too_large = BodyRefusedError(413, "body", f"the body exceeds {limit} bytes")
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BodyRefusedError(400, "content-length", "Content-Length is not a number of bytes")
        if int(declared) > limit:
            raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)
