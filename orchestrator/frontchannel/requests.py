"""The plain HTTP parts of the front-channel app: bounded forms (the body read by
:func:`orchestrator.request_body.read_body`), problems as plain answers, redirects and
pages that are never cached."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

import structlog
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse
from starlette.responses import Response as StarletteResponse

from orchestrator.frontchannel.csp import Page
from orchestrator.frontchannel.errors import RenderError
from orchestrator.request_body import BodyRefusedError, media_type, read_body

__all__ = [
    "Problem",
    "html_page",
    "no_store",
    "read_form",
    "see_other",
    "wrap",
]

_log = structlog.get_logger("logout.frontchannel")


class Problem(Exception):
    """Ends a request with ``status`` and a plain message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def no_store(response: StarletteResponse) -> StarletteResponse:
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def see_other(url: str) -> StarletteResponse:
    return no_store(RedirectResponse(url, status_code=303))


def html_page(page: Page) -> StarletteResponse:
    return HTMLResponse(page.html, headers=dict(page.headers))


async def read_form(request: Request, limit: int) -> dict[str, str]:
    if media_type(request) != "application/x-www-form-urlencoded":
        raise Problem(415, "expected an application/x-www-form-urlencoded form")
    body = await read_body(request, limit)
    try:
        pairs = parse_qsl(
            body.decode("ascii"),
            keep_blank_values=True,
            strict_parsing=bool(body),
            max_num_fields=16,
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise Problem(400, "the form is not a valid urlencoded form") from exc
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            raise Problem(400, f"the form repeats the field {name!r}")
        form[name] = value
    return form


def wrap(
    endpoint: Callable[[Request], Any],
) -> Callable[[Request], Any]:
    async def call(request: Request) -> StarletteResponse:
        try:
            response: StarletteResponse = await endpoint(request)
        except (Problem, BodyRefusedError) as problem:
            if request.url.path.endswith("/report"):
                return no_store(JSONResponse({"error": problem.message}, problem.status))
            return no_store(PlainTextResponse(problem.message, problem.status))
        except RenderError as exc:
            _log.error("cannot render a logout page", error=str(exc))
            return no_store(PlainTextResponse(f"cannot render this logout step: {exc}", 500))
        return response

    return call
