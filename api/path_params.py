"""Path parameters, checked as the event contract checks the same fields: a refusal is a 422
naming the parameter, never a lookup of text no record could hold."""

from __future__ import annotations

from pydantic import TypeAdapter, ValidationError
from starlette.requests import Request

from orchestrator.validation import problems_from
from schemas.errors import InputError, Problem
from schemas.fields import Identifier

__all__ = ["identifier"]

_IDENTIFIER: TypeAdapter[str] = TypeAdapter(Identifier)


def identifier(request: Request, name: str) -> str:
    """The path parameter ``name`` as an identifier (``session_id``, ``user_id``, ...)."""
    text: str = request.path_params[name]
    try:
        return _IDENTIFIER.validate_python(text)
    except ValidationError as exc:
        raise InputError(
            [Problem("path", name, p.message) for p in problems_from(exc, "")]
        ) from None
