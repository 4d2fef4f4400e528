"""Reading a request body: capped at ``api_body_limit`` bytes
(:func:`orchestrator.request_body.read_body`), JSON (or JSON lines), and every refusal a
problem naming what to fix."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from api.problems import ApiProblem
from orchestrator.request_body import media_type, read_body
from orchestrator.validation import load_json, problems_from
from schemas.errors import InputError, Problem

__all__ = ["JSON_TYPES", "NDJSON", "read_json", "read_model"]

NDJSON = "application/x-ndjson"
JSON_TYPES = ("application/json", NDJSON)
_M = TypeVar("_M", bound=BaseModel)


def _charset(request: Request) -> str | None:
    """The ``charset`` parameter of the request's Content-Type, lower-cased; None if none."""
    _, _, parameters = request.headers.get("content-type", "").partition(";")
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"').lower()
    return None


def _check_type(request: Request, types: tuple[str, ...]) -> str:
    kind = media_type(request)
    if kind not in types:
        raise ApiProblem(
            415,
            "unsupported media type",
            f"send Content-Type: {' or '.join(types)} (got {kind or 'none'})",
            [Problem("header", "content-type", f"one of {', '.join(types)}")],
        )
    charset = _charset(request)
    if charset not in (None, "utf-8", "utf8"):
        raise ApiProblem(
            415,
            "unsupported media type",
            f"a JSON body is UTF-8 (RFC 8259): send Content-Type: {kind} without a charset, "
            f"or with charset=utf-8 (got charset={charset})",
            [Problem("header", "content-type", f"charset {charset}: JSON must be UTF-8")],
        )
    return kind


def _text(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError([Problem("body", "", f"not UTF-8 (byte {exc.start})")]) from None


async def read_json(
    request: Request, limit: int, *, types: tuple[str, ...] = ("application/json",)
) -> tuple[Any, str]:
    """The decoded JSON body and its media type (an NDJSON body is returned as its text)."""
    kind = _check_type(request, types)
    text = _text(await read_body(request, limit))
    if kind == NDJSON:
        return text, kind
    if not text.strip():
        raise InputError([Problem("body", "", "empty; send a JSON document")])
    return load_json(text, "body"), kind


async def read_model(request: Request, limit: int, model: type[_M], *, optional: bool) -> _M:
    """The body validated as ``model``; an empty body is ``model()`` when ``optional``."""
    body = await read_body(request, limit)
    if optional and not body.strip():
        return model()
    _check_type(request, ("application/json",))
    text = _text(body)
    if not text.strip():
        raise InputError([Problem("body", "", "empty; send a JSON document")])
    try:
        return model.model_validate(load_json(text, "body"))
    except ValidationError as exc:
        raise InputError(problems_from(exc, "body", models=model)) from exc
