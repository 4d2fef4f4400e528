"""Field types every contract shares: identifiers, capped free text, timestamps, event ids.

Each bound is stated in the JSON Schema (``pattern``, ``maxLength``, ``maxProperties``) and
refused on validation with the field named: a NUL or other control character in an identifier
(it breaks PostgreSQL text and ``->>`` queries, and log lines), a NUL in any text, a text
longer than its cap, an epoch number where an RFC 3339 timestamp is due, a timestamp outside
1970 to 9000 (UTC), the nil UUID.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Final
from uuid import UUID

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, Field, WithJsonSchema

from schemas.redaction import redact

__all__ = [
    "ID_MAX",
    "NAME_MAX",
    "NIL_UUID",
    "REQUEST_ARGS_MAX",
    "TIMESTAMP_END",
    "TIMESTAMP_MIN",
    "ArgValue",
    "AsNumber",
    "EventId",
    "Expiry",
    "GeoCode",
    "Identifier",
    "Latitude",
    "LongIdentifier",
    "Longitude",
    "Method",
    "Name",
    "RelayState",
    "RequestArgs",
    "Sha256Hex",
    "ShortName",
    "Text",
    "Timestamp",
    "UrlPath",
    "UserAgent",
    "printable",
]

#: The longest identifier (session, user, provider session ids, ``sid``, ...).
ID_MAX: Final = 255
#: Most arguments of one request kept with an event.
REQUEST_ARGS_MAX: Final = 100
NIL_UUID: Final = UUID(int=0)
#: The longest :data:`Name` (an admin's id as ``actor``, an organisation, a city).
NAME_MAX: Final = 255

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
#: A SHA-256 digest as 64 lower-case hexadecimal digits (of an API token, a device cookie id).
Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
#: A short label (an admin's id as ``actor``, an organisation, a city): at most 255, no NUL.
Name = Annotated[str, Field(max_length=NAME_MAX), _TextCheck, _TEXT_SCHEMA]
#: A reason or other free text for the audit trail: at most 1024 characters, no NUL.
Text = Annotated[str, Field(max_length=1024), _TextCheck, _TEXT_SCHEMA]
#: What the HTTP client sent (its User-Agent, the path, the arguments) is clipped, never
#: refused: a hostile client must not be able to veto the logout or the binding violation
#: its request causes. Clipped text ends with this mark; a NUL becomes U+FFFD.
CLIPPED_MARK: Final = "\u2026"
USER_AGENT_MAX: Final = 1024
PATH_MAX: Final = 2048


def printable(text: str, limit: int | None = None) -> str:
    """``text`` with every control character escaped (``\\x00``, ``\\n``), cut at ``limit``."""
    if text.isprintable():
        shown = text
    else:
        shown = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
    if limit is not None and len(shown) > limit:
        return shown[:limit] + f"... ({len(shown) - limit} more characters)"
    return shown


def clip_text(value: str, limit: int) -> str:
    """``value`` without NULs, and at most ``limit`` characters (the last one the mark)."""
    value = value.replace("\x00", "\ufffd")
    return value if len(value) <= limit else value[: limit - 1] + CLIPPED_MARK


def _clipper(limit: int) -> BeforeValidator:
    return BeforeValidator(
        lambda value: clip_text(value, limit) if isinstance(value, str) else value
    )


def _clipped_schema(limit: int) -> Any:
    return Field(description=f"clipped to {limit} characters (a NUL becomes U+FFFD)")


#: A browser's User-Agent, as the client sent it: clipped to 1024 characters, never refused.
UserAgent = Annotated[str, _clipper(USER_AGENT_MAX), _clipped_schema(USER_AGENT_MAX)]
#: A request path, as the client sent it: clipped to 2048 characters, never refused.
UrlPath = Annotated[str, _clipper(PATH_MAX), _clipped_schema(PATH_MAX)]

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
        {"type": "string"},
        {"type": ["number", "boolean", "null"]},
        {"type": "array", "items": {"type": "string"}},
    ]
}


def _clip_arg(value: Any) -> Any:
    if isinstance(value, str):
        return clip_text(value, _ARG_TEXT_MAX)
    if isinstance(value, list):
        return [
            clip_text(v, _ARG_TEXT_MAX) if isinstance(v, str) else v
            for v in value[:REQUEST_ARGS_MAX]
        ]
    return value


def _clip_args(value: Any) -> Any:
    """The client's arguments clipped: the first 100, names to 256 characters, values (and
    each value of a repeated argument, at most 100) to 4096."""
    if not isinstance(value, dict):
        return value
    return {
        (clip_text(name, _ARG_NAME_MAX) if isinstance(name, str) else name): _clip_arg(item)
        for name, item in list(value.items())[:REQUEST_ARGS_MAX]
    }


def _arg_value(value: Any) -> Any:
    """A request argument: text, a number, a boolean, null, or a list of texts."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    raise ValueError(
        "must be a string, a number, a boolean, null or a list of strings "
        f"(not {type(value).__name__})"
    )


#: One request argument: a value, or the list of values of a repeated argument.
ArgValue = Annotated[Any, AfterValidator(_arg_value), WithJsonSchema(_ARG_VALUE_SCHEMA)]
#: A request's arguments, as the client sent them: clipped (the first 100, names of at most 256
#: characters, values of at most 4096), never refused; kept with secret-named values
#: (``id_token_hint``, ``password``) and JWTs redacted, for they are stored, audited and logged.
RequestArgs = Annotated[
    dict[str, ArgValue],
    BeforeValidator(_clip_args),
    Field(
        description=(
            f"clipped to the first {REQUEST_ARGS_MAX} arguments, names of at most "
            f"{_ARG_NAME_MAX} and values of at most {_ARG_TEXT_MAX} characters"
        )
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


#: The earliest instant a :data:`Timestamp` (or :data:`Expiry`) may name (in UTC).
TIMESTAMP_MIN: Final = datetime(1970, 1, 1, tzinfo=UTC)
#: The first instant past a :data:`Timestamp`'s range: the session policy adds lifetimes of
#: up to 100 years to a login, and the times it reaches must still be times.
TIMESTAMP_END: Final = datetime(9000, 1, 1, tzinfo=UTC)
_MIN_TEXT = TIMESTAMP_MIN.isoformat().replace("+00:00", "Z")
_END_TEXT = TIMESTAMP_END.isoformat().replace("+00:00", "Z")


def _utc(value: datetime) -> datetime | None:
    """``value`` in UTC; None when it is no instant there (``0001-01-01T00:00:00+01:00``)."""
    try:
        return value.astimezone(UTC)
    except OverflowError:
        return None


def _in_range(value: datetime) -> datetime:
    """Refuse an instant no IdP clock gives (``9999-12-31T23:59:59+00:00``): past the range,
    the lifetimes added to it overflowed the worker, and the event was neither handled nor
    refused."""
    utc = _utc(value)
    if utc is None or not TIMESTAMP_MIN <= utc < TIMESTAMP_END:
        raise ValueError(
            f"must fall from {_MIN_TEXT} up to (not including) {_END_TEXT}, in UTC; check the "
            "clock that wrote it"
        )
    return value


def _an_expiry(value: datetime) -> datetime:
    """An end nothing is added to may be as late as the calendar goes (``9999-12-31``, an
    IdP's "never"), but not before :data:`TIMESTAMP_MIN` nor out of the calendar in UTC."""
    utc = _utc(value)
    if utc is None or utc < TIMESTAMP_MIN:
        raise ValueError(f"must fall from {_MIN_TEXT} on, in UTC (up to 9999-12-31T23:59:59Z)")
    return value


#: An RFC 3339 timestamp with an offset, :data:`TIMESTAMP_MIN` to :data:`TIMESTAMP_END`;
#: epoch numbers are refused.
Timestamp = Annotated[
    AwareDatetime,
    BeforeValidator(_rfc3339_only),
    AfterValidator(_in_range),
    Field(json_schema_extra={"formatMinimum": _MIN_TEXT, "formatExclusiveMaximum": _END_TEXT}),
]
#: An end (``expires_at``, ``expires``): as :data:`Timestamp`, but as late as the calendar
#: goes (nothing is added to it).
Expiry = Annotated[
    AwareDatetime,
    BeforeValidator(_rfc3339_only),
    AfterValidator(_an_expiry),
    Field(json_schema_extra={"formatMinimum": _MIN_TEXT}),
]


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
