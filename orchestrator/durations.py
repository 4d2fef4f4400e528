"""Durations in the two notations seen in the field, and pydantic types for settings.

Accepted text (surrounding whitespace is ignored):

- **Keyword form** ``hours=1,minutes=2.5``: comma-separated ``key=value`` items whose keys are
  the keyword arguments of :class:`~datetime.timedelta` (``microseconds``, ``milliseconds``,
  ``seconds``, ``minutes``, ``hours``, ``days``, ``weeks``), each at most once. Values are
  non-negative decimal numbers (``2.5``, ``.5``); spaces around ``,`` and ``=`` are tolerated.
- **Compact form** ``1h30m``: one or more ``<number><unit>`` parts, each unit at most once, in any
  order, optionally separated by spaces (``1h 30m``). Units are case-sensitive: ``y`` year,
  ``M`` month, ``w`` week, ``d`` day, ``h`` hour, ``m`` minute, ``s`` second, ``ms`` millisecond,
  ``us`` (or ``µs``) microsecond. Numbers may have a fractional part (``1.5h``).
- **A bare number** is seconds (``90``, ``2.5``), as an integer or float setting would be;
  ``0`` is a valid zero duration.
- **``-1``** means *disabled* and gives ``None``, but only where the caller allows it
  (``allow_disabled=True``, :data:`OptionalDuration`); elsewhere it is refused.

Months and years have fixed lengths, with no calendar arithmetic: **a month (``M``) is 30 days
and a year (``y``) is 365 days**. Signs, exponents and other negative values are refused.

Anything else raises :class:`DurationError`, whose message quotes the offending text and says
what is wrong with it.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Annotated, Final

from pydantic import PlainSerializer, PlainValidator, WithJsonSchema

from orchestrator.errors import LogoutError

__all__ = [
    "DAYS_PER_MONTH",
    "DAYS_PER_YEAR",
    "DISABLED",
    "Duration",
    "DurationError",
    "OptionalDuration",
    "format_duration",
    "parse_duration",
]

DAYS_PER_MONTH: Final = 30
"""Length of the ``M`` unit, in days."""
DAYS_PER_YEAR: Final = 365
"""Length of the ``y`` unit, in days."""
DISABLED: Final = "-1"
"""The notation for a disabled feature."""

_KEYWORDS: Final = (
    "microseconds",
    "milliseconds",
    "seconds",
    "minutes",
    "hours",
    "days",
    "weeks",
)

# unit -> (timedelta keyword, factor)
_UNITS: Final[dict[str, tuple[str, int]]] = {
    "y": ("days", DAYS_PER_YEAR),
    "M": ("days", DAYS_PER_MONTH),
    "w": ("weeks", 1),
    "d": ("days", 1),
    "h": ("hours", 1),
    "m": ("minutes", 1),
    "s": ("seconds", 1),
    "ms": ("milliseconds", 1),
    "us": ("microseconds", 1),
    "µs": ("microseconds", 1),  # micro sign
    "μs": ("microseconds", 1),  # Greek small letter mu
}
_UNIT_LIST: Final = "y, M (30 days), w, d, h, m (minutes), s, ms, us"

_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")
_BARE_NUMBER = re.compile(r"[-+]?[0-9.]+")
_COMPACT_PART = re.compile(r"(?P<number>[-+]?[0-9.]+)(?P<unit>[A-Za-zµμ]*)")
_QUOTE_LIMIT: Final = 120


class DurationError(LogoutError, ValueError):
    """A duration was refused; the message quotes ``text`` and says what is wrong (``problem``)."""

    def __init__(self, text: str, problem: str) -> None:
        self.text = text
        self.problem = problem
        super().__init__(f"invalid duration {_quote(text)}: {problem}")


def _quote(text: str) -> str:
    """``text`` quoted for a message, shortened when very long."""
    return repr(text) if len(text) <= _QUOTE_LIMIT else repr(text[:_QUOTE_LIMIT]) + "..."


def parse_duration(text: str, *, allow_disabled: bool = True) -> timedelta | None:
    """The duration ``text`` denotes, or ``None`` for ``-1`` (disabled) when ``allow_disabled``.

    See the module documentation for the notations; a month is 30 days and a year 365 days.
    Raises :class:`DurationError` naming the offending text and the problem.
    """
    stripped = text.strip()
    if not stripped:
        raise DurationError(text, "empty; expected e.g. '1h30m' or 'hours=1,minutes=30'")
    if stripped == DISABLED:
        if allow_disabled:
            return None
        raise DurationError(text, "-1 (disabled) is not allowed here; give a duration")
    if "=" in stripped:
        return _parse_keywords(text, stripped)
    if _BARE_NUMBER.fullmatch(stripped):
        seconds = _number(text, stripped, "the number of seconds", allow_disabled)
        return _build(text, {"seconds": seconds})
    return _parse_compact(text, stripped, allow_disabled)


def _parse_keywords(text: str, stripped: str) -> timedelta:
    values: dict[str, float] = {}
    for raw_item in stripped.split(","):
        item = raw_item.strip()
        if not item:
            raise DurationError(text, "empty item: a comma with nothing before or after it")
        key, equals, raw_value = item.partition("=")
        key, value = key.strip(), raw_value.strip()
        if not equals:
            raise DurationError(
                text, f"{_quote(item)} is not key=value (the two notations cannot be mixed)"
            )
        if not key:
            raise DurationError(text, f"missing key before '=' in {_quote(item)}")
        if key not in _KEYWORDS:
            raise DurationError(
                text, f"unknown key {_quote(key)}; expected one of {', '.join(_KEYWORDS)}"
            )
        if key in values:
            raise DurationError(text, f"duplicate key {_quote(key)}")
        values[key] = _number(text, value, f"the value of {_quote(key)}", allow_disabled=False)
    return _build(text, values)


def _parse_compact(text: str, stripped: str, allow_disabled: bool) -> timedelta:
    values: dict[str, float] = {}
    seen: set[str] = set()
    position = 0
    while position < len(stripped):
        if stripped[position].isspace():
            position += 1
            continue
        match = _COMPACT_PART.match(stripped, position)
        if match is None:
            what = "unexpected" if position else "not a duration:"
            raise DurationError(
                text,
                f"{what} {_quote(stripped[position:])}; expected <number><unit> parts like "
                "'1h30m' or key=value items like 'hours=1,minutes=30'",
            )
        number, unit = match["number"], match["unit"]
        if not unit:
            raise DurationError(text, f"{_quote(number)} has no unit; units are {_UNIT_LIST}")
        if unit not in _UNITS:
            raise DurationError(
                text,
                f"unknown unit {_quote(unit)} in {_quote(match[0])}; "
                f"units are {_UNIT_LIST} (case-sensitive)",
            )
        canonical = "us" if unit in ("µs", "μs") else unit
        if canonical in seen:
            raise DurationError(text, f"duplicate unit {_quote(unit)}")
        seen.add(canonical)
        keyword, factor = _UNITS[unit]
        value = _number(text, number, _quote(match[0]), allow_disabled) * factor
        values[keyword] = values.get(keyword, 0) + value
        position = match.end()
    return _build(text, values)


def _number(text: str, token: str, what: str, allow_disabled: bool) -> float:
    """``token`` as a non-negative int or float, or a :class:`DurationError` about ``what``."""
    if not token:
        raise DurationError(text, f"missing number for {what}")
    if token.startswith("-") and _NUMBER.fullmatch(token[1:]):
        hint = "; -1 alone means disabled" if allow_disabled else ""
        raise DurationError(text, f"{what} is negative{hint}")
    if not _NUMBER.fullmatch(token):
        raise DurationError(text, f"{what}: {_quote(token)} is not a plain decimal number")
    return float(token) if "." in token else int(token)


def _build(text: str, values: dict[str, float]) -> timedelta:
    try:
        return timedelta(**values)
    except OverflowError as exc:
        raise DurationError(text, f"too large (at most {timedelta.max.days} days)") from exc


def format_duration(value: timedelta | None) -> str:
    """``value`` in the compact form (``1h30m``, ``2w``, ``0s``), or ``-1`` for ``None``.

    Only exact units are written (weeks when the days are a whole number of weeks, then days,
    hours, minutes, seconds, ms, us), so :func:`parse_duration` reads back the same value.
    """
    if value is None:
        return DISABLED
    if value < timedelta(0):
        raise DurationError(str(value), "negative durations have no notation")
    if not value:
        return "0s"
    days = value.days
    parts: list[str] = []
    if days % 7 == 0 and days:
        parts.append(f"{days // 7}w")
    elif days:
        parts.append(f"{days}d")
    hours, rest = divmod(value.seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    milliseconds, microseconds = divmod(value.microseconds, 1000)
    for amount, unit in (
        (hours, "h"),
        (minutes, "m"),
        (seconds, "s"),
        (milliseconds, "ms"),
        (microseconds, "us"),
    ):
        if amount:
            parts.append(f"{amount}{unit}")
    return "".join(parts)


def _coerce(value: object, *, allow_disabled: bool) -> timedelta | None:
    """A settings value (text, number of seconds, timedelta) as a timedelta, or None if disabled."""
    if isinstance(value, str):
        return parse_duration(value, allow_disabled=allow_disabled)
    if isinstance(value, timedelta):
        if value < timedelta(0):
            raise DurationError(str(value), "negative")
        return value
    if value is None and allow_disabled:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value == -1:
            if allow_disabled:
                return None
            raise DurationError(str(value), "-1 (disabled) is not allowed here; give a duration")
        if not math.isfinite(value) or value < 0:
            raise DurationError(str(value), "not a non-negative finite number of seconds")
        return _build(str(value), {"seconds": value})
    raise DurationError(
        repr(value),
        f"expected text, a number of seconds or a timedelta, not {type(value).__name__}",
    )


def _validate_duration(value: object) -> timedelta:
    result = _coerce(value, allow_disabled=False)
    if result is None:  # unreachable: only allow_disabled=True gives None
        raise DurationError(repr(value), "a duration is required here")
    return result


def _validate_optional_duration(value: object) -> timedelta | None:
    return _coerce(value, allow_disabled=True)


_INPUT_SCHEMA: Final = {
    "anyOf": [{"type": "string"}, {"type": "number", "minimum": 0}],
    "description": "A duration: '1h30m', 'hours=1,minutes=30' or a number of seconds.",
    "examples": ["15m", "1h30m", "hours=1,minutes=2.5", 3600],
}

Duration = Annotated[
    timedelta,
    PlainValidator(_validate_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
    WithJsonSchema(_INPUT_SCHEMA, mode="validation"),
    WithJsonSchema({"type": "string", "examples": ["1h30m"]}, mode="serialization"),
]
"""A settings field holding a :class:`~datetime.timedelta`.

Accepts either text notation, an int or float number of seconds, or a timedelta; refuses
``-1`` and other negative values. Serialised to JSON in the compact form (``1h30m``).
"""

OptionalDuration = Annotated[
    timedelta | None,
    PlainValidator(_validate_optional_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
    WithJsonSchema(
        {**_INPUT_SCHEMA, "description": f"{_INPUT_SCHEMA['description']} -1 disables it."},
        mode="validation",
    ),
    WithJsonSchema({"type": "string", "examples": ["1h30m", "-1"]}, mode="serialization"),
]
"""Like :data:`Duration`, but ``-1`` (or ``"-1"``, or ``None``) means disabled and gives ``None``.

Serialised to JSON as ``-1`` when disabled.
"""
