"""Checks every protocol handler shares: URIs, errors naming provider and field, identifiers."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ValidationError, ValidationInfo

from schemas.errors import InputError, PermanentDeliveryError, Problem
from schemas.hints import did_you_mean
from schemas.registry import ProviderConfig

__all__ = [
    "URI_MAX",
    "check_uri",
    "input_error",
    "json_text",
    "stored_identifiers",
    "text_list",
    "uri_form",
]

_Model = TypeVar("_Model", bound=BaseModel)

#: The longest endpoint URI a provider may register.
URI_MAX: Final = 2048
#: Whitespace and control characters: never part of a URI (a CR or LF would split a header).
_NOT_IN_URI = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")


def check_uri(name: str, value: str | None, allow_http: bool) -> None:
    """Raise ``ValueError("name: problem")`` unless ``value`` is an absolute https URI.

    ``http`` passes when ``allow_http`` (loopback endpoints in development); a fragment, a
    user or password (``https://user:pw@host``), whitespace or a control character (CR, LF),
    or more than :data:`URI_MAX` characters never.
    """
    if value is None:
        return
    if len(value) > URI_MAX:
        raise ValueError(f"{name}: longer than {URI_MAX} characters ({len(value)})")
    bad = _NOT_IN_URI.search(value)
    if bad is not None:
        raise ValueError(
            f"{name}: contains {'a space' if bad.group() == ' ' else 'a control character'} "
            f"(U+{ord(bad.group()):04X}) at position {bad.start() + 1}; percent-encode it"
        )
    try:
        parts = urlsplit(value)
    except ValueError as exc:  # an invalid IPv6 host, say
        raise ValueError(f"{name}: not a URI ({exc})") from None
    if "@" in parts.netloc:
        raise ValueError(
            f"{name}: must not carry a user or password (user:password@host); the logout "
            "request authenticates by its signature"
        )
    if not parts.scheme or not parts.netloc:
        raise ValueError(f"{name}: must be an absolute URI")
    if parts.fragment or value.endswith("#"):
        raise ValueError(f"{name}: must not have a fragment")
    if parts.scheme not in ("https", "http"):
        raise ValueError(f"{name}: must use https")
    if parts.scheme == "http" and not allow_http:
        raise ValueError(f"{name}: must use https (set allow_http = true to permit http)")


def uri_form(value: str | None, info: ValidationInfo) -> str | None:
    """A field validator: ``value`` is a well-formed absolute http(s) URI (:func:`check_uri`
    without the https rule, which needs ``allow_http``). Checked per field, so a bad URI is
    reported along with every other problem of the provider."""
    name = info.field_name or "uri"
    try:
        check_uri(name, value, allow_http=True)
    except ValueError as exc:
        raise ValueError(str(exc).removeprefix(f"{name}: ")) from None
    return value


def stored_identifiers(model: type[_Model], identifiers: Any, protocol: str) -> _Model:
    """A stored provider session's ``identifiers`` read with the handler's ``model``.

    Identifiers that no longer fit (another protocol's, recorded before the provider's protocol
    changed) raise :class:`PermanentDeliveryError` naming each field: that one delivery fails,
    never the batch. Only field names are told, never a value (it may be a secret).
    """
    try:
        return model.model_validate(identifiers)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'identifiers'}: "
            + (
                "not one of its identifiers"
                if error["type"] == "extra_forbidden"
                else error["msg"].removeprefix("Value error, ")
            )
            for error in exc.errors()
        )
        known = ", ".join(model.model_fields) or "any"
        raise PermanentDeliveryError(
            f"the provider session's identifiers do not fit protocol {protocol!r} ({problems}; "
            f"it takes: {known}); end the session or import it again with this protocol's "
            "identifiers"
        ) from None


def input_error(
    exc: ValidationError,
    provider: str,
    model: type[BaseModel] | None = None,
    also: Iterable[str] = (),
) -> InputError:
    """The problems of a provider's settings, each naming the provider and the field.

    With ``model`` (the protocol's settings model), an unknown field names the closest of
    its fields, ``also`` (fields read before the model, such as ``metadata_file``) and the
    common ones (``enabeld``: did you mean enabled?).
    """
    known: Iterable[str] = [
        *ProviderConfig.model_fields,
        *(model.model_fields if model else ()),
        *also,
    ]
    where = f"provider {provider!r}"
    problems = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown field" + did_you_mean(field, known)
        if not field and ": " in message:
            # Cross-field rules say "field: problem".
            field, message = message.split(": ", 1)
        problems.append(Problem(where, field, message))
    return InputError(problems)


def json_text(value: Any) -> Any:
    """A field validator (``mode="before"``) for a container a variable gives as text:
    JSON (``{"soap": "https://..."}``) is decoded; anything else is left to the field."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg}, at character {exc.pos})") from exc


def text_list(value: Any) -> Any:
    """A field validator (``mode="before"``) for a list a variable gives as text: JSON
    (``["a", "b"]``) or comma-separated (``a,b``)."""
    if not isinstance(value, str):
        return value
    if value.lstrip().startswith("["):
        return json_text(value)
    return [item.strip() for item in value.split(",") if item.strip()]
