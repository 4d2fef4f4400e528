"""Field types every contract shares: identifiers, capped free text, timestamps, event ids.

Each bound is stated in the JSON Schema (``pattern``, ``maxLength``, ``maxProperties``) and
refused on validation with the field named: a NUL or other control character in an identifier
(it breaks PostgreSQL text and ``->>`` queries, and log lines), a NUL in any text, a text
longer than its cap, an epoch number where an RFC 3339 timestamp is due, the nil UUID.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final
from uuid import UUID

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, Field, WithJsonSchema

from schemas.redaction import redact

__all__ = [
    "ID_MAX",
    "NIL_UUID",
    "REQUEST_ARGS_MAX",
    "ArgValue",
    "AsNumber",
    "EventId",
    "GeoCode",
    "Identifier",
    "Latitude",
    "LongIdentifier",
    "Longitude",
    "Method",
    "Name",
    "RelayState",
    "RequestArgs",
    "ShortName",
    "Text",
    "Timestamp",
    "UrlPath",
    "UserAgent",
]

#: The longest identifier (session, user, provider session ids, ``sid``, ...).
ID_MAX: Final = 255
#: Most arguments of one request kept with an event.
REQUEST_ARGS_MAX: Final = 100
NIL_UUID: Final = UUID(int=0)

#: C0 controls, DEL and C1 controls: never part of an identifier.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_IDENTIFIER_PATTERN: Final = r"^[^\x00-\x1f\x7f-\x9f]*$"
_TEXT_PATTERN: Final = r"^[^\x00]*$"


def _no_control(value: Any) -> Any:
    """Refuse a control character in an identifier, naming the first and where it is."""
    if isinstance(value, str):
        found = _CONTROL.search(value)
        if found is not None:
            raise ValueError(
                f"contains the control character U+{ord(found.group()):04X} at position "
                f"{found.start() + 1}; identifiers are printable text"
            )
    return value


def _no_nul(value: Any) -> Any:
    """Refuse a NUL character in free text (PostgreSQL stores no NUL)."""
    if isinstance(value, str) and "\x00" in value:
        raise ValueError(f"contains a NUL character at position {value.index(chr(0)) + 1}")
    return value


_IdentifierCheck = BeforeValidator(_no_control)
_TextCheck = BeforeValidator(_no_nul)
_IDENTIFIER_SCHEMA = Field(json_schema_extra={"pattern": _IDENTIFIER_PATTERN})
_TEXT_SCHEMA = Field(json_schema_extra={"pattern": _TEXT_PATTERN})

#: A session, user or provider session identifier: 1-255 printable characters.
Identifier = Annotated[
    str, Field(min_length=1, max_length=ID_MAX), _IdentifierCheck, _IDENTIFIER_SCHEMA
]
#: A longer identifier (a SAML ``NameID``, an entity id): 1-1024 printable characters.
LongIdentifier = Annotated[
    str, Field(min_length=1, max_length=1024), _IdentifierCheck, _IDENTIFIER_SCHEMA
]
#: A short label (an admin's id as ``actor``, an organisation, a city): at most 255, no NUL.
Name = Annotated[str, Field(max_length=255), _TextCheck, _TEXT_SCHEMA]
#: A reason or other free text for the audit trail: at most 1024 characters, no NUL.
Text = Annotated[str, Field(max_length=1024), _TextCheck, _TEXT_SCHEMA]
#: A browser's User-Agent: at most 1024 characters, no NUL.
UserAgent = Annotated[str, Field(max_length=1024), _TextCheck, _TEXT_SCHEMA]
#: A request path: at most 2048 characters, no NUL.
UrlPath = Annotated[str, Field(max_length=2048), _TextCheck, _TEXT_SCHEMA]

#: A short code or label (a country or continent code, a CIDR network): at most 64, no NUL.
ShortName = Annotated[str, Field(max_length=64), _TextCheck, _TEXT_SCHEMA]
#: A continent or country code of a GeoIP record: at most 8, no NUL.
GeoCode = Annotated[str, Field(max_length=8), _TextCheck, _TEXT_SCHEMA]
#: An HTTP method: 1-32 printable characters.
Method = Annotated[str, Field(min_length=1, max_length=32), _IdentifierCheck, _IDENTIFIER_SCHEMA]
#: A SAML RelayState: at most 80 bytes (SAML Bindings §3.4.3), no NUL.
RelayState = Annotated[str, Field(max_length=80), _TextCheck, _TEXT_SCHEMA]
#: An autonomous system number (32 bits).
AsNumber = Annotated[int, Field(ge=0, le=4_294_967_295)]
Latitude = Annotated[float, Field(ge=-90, le=90)]
Longitude = Annotated[float, Field(ge=-180, le=180)]

_ARG_TEXT_MAX: Final = 4096
_ARG_NAME_MAX: Final = 256
_ARG_VALUE_SCHEMA: Final[dict[str, Any]] = {
    "anyOf": [
        {"type": "string", "maxLength": _ARG_TEXT_MAX, "pattern": _TEXT_PATTERN},
        {"type": ["number", "boolean", "null"]},
        {
            "type": "array",
            "maxItems": REQUEST_ARGS_MAX,
            "items": {"type": "string", "maxLength": _ARG_TEXT_MAX, "pattern": _TEXT_PATTERN},
        },
    ]
}


def _arg_text(value: str) -> str:
    _no_nul(value)
    if len(value) > _ARG_TEXT_MAX:
        raise ValueError(f"longer than {_ARG_TEXT_MAX} characters ({len(value)})")
    return value


def _arg_value(value: Any) -> Any:
    """A request argument: text, a number, a boolean, null, or a list of texts."""
    if isinstance(value, str):
        return _arg_text(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        if len(value) > REQUEST_ARGS_MAX:
            raise ValueError(f"more than {REQUEST_ARGS_MAX} values ({len(value)})")
        return [_arg_text(item) for item in value]
    raise ValueError(
        "must be a string, a number, a boolean, null or a list of strings "
        f"(not {type(value).__name__})"
    )


_ArgName = Annotated[str, Field(max_length=_ARG_NAME_MAX), _TextCheck]
#: One request argument: a value, or the list of values of a repeated argument.
ArgValue = Annotated[Any, AfterValidator(_arg_value), WithJsonSchema(_ARG_VALUE_SCHEMA)]
#: A request's arguments: at most 100, names of at most 256 characters, values of at most 4096;
#: kept with secret-named values (``id_token_hint``, ``password``) and JWTs redacted, for they
#: are stored, audited and logged.
RequestArgs = Annotated[
    dict[_ArgName, ArgValue],
    Field(
        max_length=REQUEST_ARGS_MAX,
        json_schema_extra={"propertyNames": {"maxLength": _ARG_NAME_MAX, "pattern": _TEXT_PATTERN}},
    ),
    AfterValidator(redact),
]


def _rfc3339_only(value: Any) -> Any:
    """Refuse a number (or a string of digits) where a timestamp is due: pydantic would read
    it as seconds since 1970, which a publisher rarely means and an auditor cannot read."""
    if isinstance(value, bool | int | float) or (
        isinstance(value, str) and value.strip().lstrip("-").replace(".", "", 1).isdigit()
    ):
        raise ValueError(
            "must be an RFC 3339 timestamp with a UTC offset (2026-11-22T10:00:00+00:00), "
            "not a number"
        )
    return value


#: An RFC 3339 timestamp with an offset; epoch numbers are refused.
Timestamp = Annotated[AwareDatetime, BeforeValidator(_rfc3339_only)]


def _not_nil(value: UUID) -> UUID:
    if value == NIL_UUID:
        raise ValueError("the nil UUID is no event id; give each event its own (uuid4)")
    return value


#: An event id: a UUID other than the nil UUID.
EventId = Annotated[
    UUID,
    AfterValidator(_not_nil),
    Field(json_schema_extra={"not": {"const": str(NIL_UUID)}}),
]
