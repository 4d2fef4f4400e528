"""Checks every protocol's provider settings share: URIs, and errors naming provider and field."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import ValidationError

from schemas.errors import InputError, Problem

__all__ = ["check_uri", "input_error"]


def check_uri(name: str, value: str | None, allow_http: bool) -> None:
    """Raise ``ValueError("name: problem")`` unless ``value`` is an absolute https URI.

    ``http`` passes when ``allow_http`` (loopback endpoints in development); a fragment never.
    """
    if value is None:
        return
    parts = urlsplit(value)
    if not parts.scheme or not parts.netloc:
        raise ValueError(f"{name}: must be an absolute URI")
    if parts.fragment or value.endswith("#"):
        raise ValueError(f"{name}: must not have a fragment")
    if parts.scheme not in ("https", "http"):
        raise ValueError(f"{name}: must use https")
    if parts.scheme == "http" and not allow_http:
        raise ValueError(f"{name}: must use https (set allow_http = true to permit http)")


def input_error(exc: ValidationError, provider: str) -> InputError:
    """The problems of a provider's settings, each naming the provider and the field."""
    where = f"provider {provider!r}"
    problems = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        if not field and ": " in message:
            # Cross-field rules say "field: problem".
            field, message = message.split(": ", 1)
        problems.append(Problem(where, field, message))
    return InputError(problems)
