"""Reading a duration's text: the notations, their units, and the errors that quote it.

:func:`parse_duration` turns text into a :class:`~datetime.timedelta` (see
:mod:`schemas.durations` for the notations); :class:`DurationError` quotes the text and
says what is wrong with it.
"""

from __future__ import annotations

import re
from datetime import timedelta
from functools import cache
from typing import Final

from pydantic import TypeAdapter, ValidationError

from schemas.errors import LogoutError

__all__ = [
    "DAYS_PER_MONTH",
    "DAYS_PER_YEAR",
    "DISABLED",
    "LONGEST",
    "NOTATIONS",
    "TOO_LARGE",
    "DurationError",
    "parse_duration",
    "timedelta_of",
]

DAYS_PER_MONTH: Final = 30
"""Length of the ``M`` unit, in days."""
DAYS_PER_YEAR: Final = 365
"""Length of the ``y`` unit, in days."""
DISABLED: Final = "-1"
"""The notation for a disabled feature."""
#: The longest duration any setting takes: beyond it a deadline computed from now overflows
#: the calendar (a value this large is a typo, such as a unit left out).
LONGEST: Final = timedelta(days=36500)
TOO_LARGE: Final = "too large (at most 100 years, 36500 days)"
"""The problem a duration beyond :data:`LONGEST` is refused with."""

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
NOTATIONS: Final = (
    f"compact '1h30m' (units {_UNIT_LIST}; case-sensitive), keywords 'hours=1,minutes=30', "
    "ISO 8601 'PT1H30M' or 'P1D', or a bare number of {bare_unit}"
)
"""The accepted notations, for messages (``{bare_unit}``: what a bare number counts)."""

# Words people write for a unit (singular, lower case) -> the unit meant.
_UNIT_WORDS: Final = {
    "year": "y",
    "yr": "y",
    "month": "M",
    "mo": "M",
    "mon": "M",
    "week": "w",
    "wk": "w",
    "day": "d",
    "hour": "h",
    "hr": "h",
    "minute": "m",
    "min": "m",
    "second": "s",
    "sec": "s",
    "millisecond": "ms",
    "msec": "ms",
    "microsecond": "us",
    "usec": "us",
}

_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")
_BARE_NUMBER = re.compile(r"[-+]?[0-9.]+")
_COMPACT_PART = re.compile(r"(?P<number>[-+]?[0-9.]+)(?P<space>\s*)(?P<unit>[A-Za-zµμ]*)")
_QUOTE_LIMIT: Final = 120


@cache
def _iso() -> TypeAdapter[timedelta]:
    """pydantic's ISO 8601 reader, built on first use (not on import)."""
    return TypeAdapter(timedelta)


class DurationError(LogoutError, ValueError):
    """A duration was refused; the message quotes ``text`` and says what is wrong (``problem``)."""

    def __init__(self, text: str, problem: str) -> None:
        self.text = text
        self.problem = problem
        super().__init__(f"invalid duration {_quote(text)}: {problem}")


def _quote(text: str) -> str:
    """``text`` quoted for a message, shortened when very long."""
    return repr(text) if len(text) <= _QUOTE_LIMIT else repr(text[:_QUOTE_LIMIT]) + "..."


def parse_duration(
    text: str, *, allow_disabled: bool = True, bare_unit: str = "seconds"
) -> timedelta | None:
    """The duration ``text`` denotes, or ``None`` for ``-1`` (disabled) when ``allow_disabled``.

    See the module documentation for the notations; a month is 30 days and a year 365 days.
    A bare number counts ``bare_unit`` (a :class:`~datetime.timedelta` keyword).
    Raises :class:`DurationError` naming the offending text and the problem.
    """
    stripped = text.strip()
    if not stripped:
        raise DurationError(text, "empty; expected e.g. '1h30m' or 'hours=1,minutes=30'")
    if stripped == DISABLED:
        if allow_disabled:
            return None
        raise DurationError(text, "-1 (disabled) is not allowed here; give a duration")
    if stripped.lstrip("+-").startswith("P"):
        return _parse_iso(text, stripped, bare_unit)
    if "=" in stripped:
        return _parse_keywords(text, stripped)
    if _BARE_NUMBER.fullmatch(stripped):
        number = _number(text, stripped, f"the number of {bare_unit}", allow_disabled)
        return timedelta_of(text, {bare_unit: number})
    return _parse_compact(text, stripped, allow_disabled, bare_unit)


def _parse_iso(text: str, stripped: str, bare_unit: str) -> timedelta:
    """ISO 8601 (``PT30M``), read by pydantic; ``M`` is months before ``T``, minutes after."""
    if not stripped.startswith("P"):
        raise DurationError(text, "negative durations are not allowed")
    try:
        value = _iso().validate_python(stripped)
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"].removeprefix("Input should be a valid timedelta, ")
        raise DurationError(
            text,
            f"not an ISO 8601 duration ({reason}); ISO 8601 looks like 'PT30M', 'P1D' or "
            f"'P1DT2H30M'. Accepted: {NOTATIONS.format(bare_unit=bare_unit)}",
        ) from exc
    if value < timedelta(0):
        raise DurationError(text, "negative durations are not allowed")
    if value > LONGEST:
        raise DurationError(text, TOO_LARGE)
    return value


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
    return timedelta_of(text, values)


def _parse_compact(text: str, stripped: str, allow_disabled: bool, bare_unit: str) -> timedelta:
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
                f"{what} {_quote(stripped[position:])}; "
                f"accepted: {NOTATIONS.format(bare_unit=bare_unit)}",
            )
        number, unit = match["number"], match["unit"]
        if not unit:
            raise DurationError(text, f"{_quote(number)} has no unit; units are {_UNIT_LIST}")
        if unit not in _UNITS or match["space"]:
            raise DurationError(text, _unit_problem(number, match["space"], unit, bare_unit))
        canonical = "us" if unit in ("µs", "μs") else unit
        if canonical in seen:
            raise DurationError(text, f"duplicate unit {_quote(unit)}")
        seen.add(canonical)
        keyword, factor = _UNITS[unit]
        value = _number(text, number, _quote(match[0]), allow_disabled) * factor
        values[keyword] = values.get(keyword, 0) + value
        position = match.end()
    return timedelta_of(text, values)


def _unit_problem(number: str, space: str, unit: str, bare_unit: str) -> str:
    """What is wrong with ``unit`` after ``number`` (a word, a wrong case, a space), and the fix."""
    accepted = f"accepted: {NOTATIONS.format(bare_unit=bare_unit)}"
    if unit in _UNITS:
        return f"a space between {_quote(number)} and its unit; write '{number}{unit}'; {accepted}"
    meant = _UNIT_WORDS.get(unit.lower()) or _UNIT_WORDS.get(unit.lower().removesuffix("s"))
    if meant is None and unit.lower() in _UNITS:
        meant = unit.lower()
    part = f"{number}{space}{unit}"
    hint = ""
    if meant is not None:
        hint = f"; write '{number}{meant}' ({_meaning(meant)})"
    return f"unknown unit {_quote(unit)} in {_quote(part)}{hint}; {accepted}"


def _meaning(unit: str) -> str:
    keyword, factor = _UNITS[unit]
    if unit == "M":
        return "M = months of 30 days, m = minutes"
    if unit == "m":
        return "m = minutes, M = months"
    return f"{unit} = {keyword}" if factor == 1 else f"{unit} = {factor} {keyword}"


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


def timedelta_of(text: str, values: dict[str, float]) -> timedelta:
    """``timedelta(**values)``, refused (quoting ``text``) beyond :data:`LONGEST`."""
    try:
        value = timedelta(**values)
    except OverflowError as exc:
        raise DurationError(text, TOO_LARGE) from exc
    if value > LONGEST:
        raise DurationError(text, TOO_LARGE)
    return value
