"""The one body reader of the HTTP service and the front-channel pages: its cap and its
refusals (a Content-Length over the cap or no number, a chunked body over the cap)."""

from __future__ import annotations

import asyncio

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient
from starlette.types import Message

from api.problems import exception_handlers
from orchestrator.request_body import BodyRefusedError, media_type, read_body

LIMIT = 10


def _request(chunks: list[bytes], headers: dict[str, str]) -> Request:
    """A request whose body arrives in ``chunks`` (no Content-Length unless given)."""
    messages: list[Message] = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]

    async def receive() -> Message:
        return messages.pop(0)

    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return Request({"type": "http", "method": "POST", "path": "/", "headers": raw}, receive)


def _read(chunks: list[bytes], **headers: str) -> bytes:
    return asyncio.run(read_body(_request(chunks, headers), LIMIT))


def _refusal(chunks: list[bytes], **headers: str) -> BodyRefusedError:
    with pytest.raises(BodyRefusedError) as caught:
        _read(chunks, **headers)
    return caught.value


def test_a_body_within_the_cap_is_read_whole() -> None:
    """Chunks up to the cap are joined, with or without a Content-Length."""
    assert _read([b"12345", b"67890"]) == b"1234567890"
    assert _read([b"abc"], **{"content-length": "3"}) == b"abc"


def test_a_declared_length_over_the_cap_is_413_before_reading() -> None:
    """Content-Length over the cap: 413 naming the cap; nothing is read."""
    refused = _refusal([], **{"content-length": str(LIMIT + 1)})
    assert (refused.status, refused.field) == (413, "body")
    assert f"{LIMIT} bytes" in refused.message


@pytest.mark.parametrize("declared", ["ten", "-1", "1e3", ""])
def test_a_content_length_that_is_no_number_is_400_naming_the_header(declared: str) -> None:
    """A Content-Length that is no number of bytes: 400 naming the header."""
    refused = _refusal([b"x"], **{"content-length": declared})
    assert (refused.status, refused.field) == (400, "content-length")


def test_a_chunked_body_over_the_cap_is_413_once_it_exceeds_it() -> None:
    """Without a Content-Length the cap holds on what arrives."""
    refused = _refusal([b"123456", b"789012"])
    assert (refused.status, refused.field) == (413, "body")


def test_the_media_type_is_lower_cased_without_parameters() -> None:
    """``Application/JSON; charset=utf-8`` is ``application/json``."""
    request = _request([b""], {"content-type": "Application/JSON; charset=utf-8"})
    assert media_type(request) == "application/json"


def test_the_service_answers_a_refusal_as_a_problem_naming_the_header() -> None:
    """In the HTTP service a bad Content-Length is a 400 problem naming the header."""

    async def echo(request: Request) -> Response:
        return Response(await read_body(request, LIMIT))

    app = Starlette(
        routes=[Route("/echo", echo, methods=["POST"])],
        exception_handlers=exception_handlers(),  # type: ignore[arg-type]
    )
    with TestClient(app) as client:
        answer = client.post("/echo", content=b"x", headers={"content-length": "ten"})
        large = client.post("/echo", content=b"x" * (LIMIT + 1))
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["errors"][0]["field"] == "content-length"
    assert large.status_code == 413, large.text
    assert "api_body_limit" in large.json()["detail"]
