"""Every error answer is a JSON problem (RFC 9457, ``application/problem+json``) naming the
field at fault and the fix; never a traceback."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

import structlog
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from orchestrator.request_body import BodyRefusedError
from schemas.errors import (
    ConfigurationError,
    InputError,
    LogoutError,
    Problem,
    SchemaOutdatedError,
    UnavailableError,
)

__all__ = [
    "ECHO_LIMIT",
    "PROBLEM_TYPE",
    "RETRY_AFTER",
    "ApiProblem",
    "clip",
    "exception_handlers",
    "input_refused",
    "problem_response",
]

PROBLEM_TYPE: Final = "application/problem+json"
#: The most characters of an echoed value a problem repeats (:func:`clip`).
ECHO_LIMIT: Final = 100
#: One token of a problem's text: a quoted value (``'...'``, ``"..."``, as ``repr`` writes
#: one; not the apostrophe of "user's"; its closing quote in ``end``), an unbroken run of
#: other characters, or one character. Possessive: each character is read once (a text of
#: quotes and backslashes made a pattern that searched on from every quote quadratic).
_TOKEN: Final = re.compile(
    r"""(?<!\w)(?P<q>['"])(?:(?!(?P=q))[^\\]|\\.)*+(?P<end>(?P=q))?|[^\s'"]++|.""", re.S
)
#: The longest text a problem repeats, once its values are clipped.
_TEXT_MAX: Final = 20 * ECHO_LIMIT
#: A run of more than ECHO_LIMIT characters but spaces and quotes (in a quote not closed).
_RUN: Final = re.compile(rf"""[^\s'"]{{{ECHO_LIMIT + 1},}}""")
#: Seconds a client waits before trying again after a 503.
RETRY_AFTER: Final = "1"

_log = structlog.get_logger("logout.api")


class ApiProblem(LogoutError):
    """Ends a request with ``status``: ``title`` says what is wrong, ``detail`` what to do,
    ``errors`` name the fields."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        errors: Iterable[Problem] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{title}: {detail}")
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = tuple(errors)
        self.headers = dict(headers or {})


def _shortened(match: re.Match[str]) -> str:
    text = match[0]
    if match["q"] is not None and match["end"] is None:  # a quote never closed: read as words
        return _RUN.sub(_shortened_run, text)
    quote = match["q"] or ""
    inner = text[1:-1] if quote else text
    if len(inner) <= ECHO_LIMIT:
        return text
    return f"{quote}{inner[:ECHO_LIMIT]}…{quote} ({len(inner)} characters)"


def _shortened_run(match: re.Match[str]) -> str:
    return f"{match[0][:ECHO_LIMIT]}… ({len(match[0])} characters)"


def clip(text: str) -> str:
    """``text`` with each value it echoes cut to its first ECHO_LIMIT characters and its
    length: ``'xxxx…' (5000 characters)``. A problem names what is wrong, it need not repeat
    a 10 KB parameter. Linear in the text's length, whatever it holds; what is still over
    :data:`_TEXT_MAX` characters after (no long value in it, yet long) keeps its start and
    end."""
    clipped = _TOKEN.sub(_shortened, text)
    if len(clipped) <= _TEXT_MAX:
        return clipped
    head, tail = clipped[: _TEXT_MAX // 2], clipped[-_TEXT_MAX // 4 :]
    return f"{head}… ({len(clipped)} characters) …{tail}"


def problem_response(
    status: int,
    title: str,
    detail: str,
    errors: Iterable[Problem] = (),
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """The problem document: ``type``, ``title``, ``status``, ``detail`` and, when fields are
    at fault, ``errors`` (``{"where", "field", "message"}`` each); every echoed value
    clipped (:func:`clip`)."""
    body: dict[str, object] = {
        "type": "about:blank",
        "title": clip(title),
        "status": status,
        "detail": clip(detail),
    }
    items = [
        {"where": clip(p.where), "field": clip(p.field), "message": clip(p.message)} for p in errors
    ]
    if items:
        body["errors"] = items
    return JSONResponse(body, status, headers=dict(headers or {}), media_type=PROBLEM_TYPE)


async def _api_problem(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiProblem)
    return problem_response(exc.status, exc.title, exc.detail, exc.errors, exc.headers)


def input_refused(problems: Sequence[Problem]) -> JSONResponse:
    """The 422 problem of refused input, naming each field in ``errors``."""
    return problem_response(
        422,
        "input refused",
        f"{len(problems)} problem(s), nothing was applied; fix each field named in errors",
        problems,
    )


async def _input(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InputError)
    return input_refused(exc.problems)


async def _unavailable(_request: Request, exc: Exception) -> Response:
    # The message names the server and the setting to fix (never a password: redacted).
    return problem_response(503, "unavailable", str(exc), headers={"Retry-After": RETRY_AFTER})


async def _database(_request: Request, exc: Exception) -> Response:
    """The database failed under a request (down, restarting, connection cut): 503. The
    driver's message can hold the statement's parameters, so neither the answer nor the log
    carries it; only the error's type is logged. A refused write (a constraint, a bad value)
    is a bug: re-raised, it becomes the 500 of :class:`api.app._Measured`."""
    assert isinstance(exc, DBAPIError)
    if isinstance(exc, IntegrityError | DataError):
        raise exc
    _log.warning("database unavailable", error_type=type(exc).__name__)
    return problem_response(
        503,
        "unavailable",
        "the database is not answering; try again shortly (the operator sees it in /readyz)",
        headers={"Retry-After": RETRY_AFTER},
    )


async def _body_refused(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BodyRefusedError)
    fix = "send smaller batches (api_body_limit)" if exc.status == 413 else "fix the header"
    title = "body too large" if exc.status == 413 else "bad request"
    where = "body" if exc.field == "body" else "header"
    return problem_response(
        exc.status,
        title,
        f"{exc.message}; {fix}",
        [Problem(where, "" if where == "body" else exc.field, exc.message)],
    )


async def _configuration(_request: Request, exc: Exception) -> Response:
    return problem_response(503, "not configured", str(exc))


async def _http(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = {404: "no such endpoint; see /v1/openapi.json", 405: "see /v1/openapi.json"}
    return problem_response(
        exc.status_code,
        str(exc.detail),
        detail.get(exc.status_code, str(exc.detail)),
        headers=exc.headers,
    )


def exception_handlers() -> dict[type[Exception] | int, object]:
    """Starlette's ``exception_handlers`` for the service (a bug is contained by the app's
    outermost middleware, :class:`api.app._Measured`)."""
    return {
        ApiProblem: _api_problem,
        InputError: _input,
        UnavailableError: _unavailable,
        SchemaOutdatedError: _unavailable,
        DBAPIError: _database,
        ConfigurationError: _configuration,
        BodyRefusedError: _body_refused,
        HTTPException: _http,
    }
