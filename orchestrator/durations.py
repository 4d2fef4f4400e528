"""Durations in the notations seen in the field, and pydantic types for settings.

Accepted text (surrounding whitespace is ignored):

- **Keyword form** ``hours=1,minutes=2.5``: comma-separated ``key=value`` items whose keys are
  the keyword arguments of :class:`~datetime.timedelta` (``microseconds``, ``milliseconds``,
  ``seconds``, ``minutes``, ``hours``, ``days``, ``weeks``), each at most once. Values are
  non-negative decimal numbers (``2.5``, ``.5``); spaces around ``,`` and ``=`` are tolerated.
- **Compact form** ``1h30m``: one or more ``<number><unit>`` parts, each unit at most once, in any
  order, optionally separated by spaces (``1h 30m``). Units are case-sensitive: ``y`` year,
  ``M`` month, ``w`` week, ``d`` day, ``h`` hour, ``m`` minute, ``s`` second, ``ms`` millisecond,
  ``us`` (or ``µs``) microsecond. Numbers may have a fractional part (``1.5h``).
- **ISO 8601** ``PT30M``, ``P1D``, ``P1DT2H30M``, ``PT0.5S`` (read by pydantic): as in the
  standard, ``M`` before ``T`` is months and after it minutes; months and years have the fixed
  lengths below.
- **A bare number** is seconds (``90``, ``2.5``), as an integer or float setting would be
  (``bare_unit`` names another unit, e.g. milliseconds for the ``_ms`` settings);
  ``0`` is a valid zero duration.
- **``-1``** means *disabled* and gives ``None``, but only where the caller allows it
  (``allow_disabled=True``, :data:`OptionalDuration`); elsewhere it is refused.

Months and years have fixed lengths, with no calendar arithmetic: **a month (``M``) is 30 days
and a year (``y``) is 365 days**. Signs, exponents and other negative values are refused.

Anything else raises :class:`DurationError`, whose message quotes the offending text, says
what is wrong with it and lists the accepted notations (``"90 minutes"``: the unit is ``m``).

Settings that have always been plain numbers keep their type and unit (:data:`Seconds`,
:data:`WholeSeconds`, :data:`Milliseconds`): they accept the same text, converted to their unit.
:func:`describe_duration` reads a duration back in plain words (``900 days``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from typing import Annotated, Any, Final

from pydantic import (
    BeforeValidator,
    PlainSerializer,
    PlainValidator,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
)

from orchestrator.errors import LogoutError

__all__ = [
    "DAYS_PER_MONTH",
    "DAYS_PER_YEAR",
    "DISABLED",
    "NOTATIONS",
    "Duration",
    "DurationError",
    "DurationUnit",
    "Milliseconds",
    "OptionalDuration",
    "Seconds",
    "WholeSeconds",
    "describe_duration",
    "duration_fields",
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
        return _build(text, {bare_unit: number})
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
        raise DurationError(text, _TOO_LARGE)
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
    return _build(text, values)


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
    return _build(text, values)


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


#: The longest duration any setting takes: beyond it a deadline computed from now overflows
#: the calendar (a value this large is a typo, such as a unit left out).
LONGEST: Final = timedelta(days=36500)
_TOO_LARGE: Final = "too large (at most 100 years, 36500 days)"


def _build(text: str, values: dict[str, float]) -> timedelta:
    try:
        value = timedelta(**values)
    except OverflowError as exc:
        raise DurationError(text, _TOO_LARGE) from exc
    if value > LONGEST:
        raise DurationError(text, _TOO_LARGE)
    return value


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


_WORDS: Final = (
    ("day", timedelta(days=1)),
    ("hour", timedelta(hours=1)),
    ("minute", timedelta(minutes=1)),
    ("second", timedelta(seconds=1)),
    ("millisecond", timedelta(milliseconds=1)),
    ("microsecond", timedelta(microseconds=1)),
)


def describe_duration(value: timedelta | None) -> str:
    """``value`` in plain words (``1 hour, 30 minutes``; ``disabled`` for ``None``).

    Days are never folded into months or years, so a surprise shows: ``30M`` reads
    ``900 days``, not ``30 minutes``.
    """
    if value is None:
        return "disabled"
    if value < timedelta(0):
        raise DurationError(str(value), "negative durations have no reading")
    parts: list[str] = []
    rest = value
    for word, size in _WORDS:
        amount, rest = divmod(rest, size)
        if amount:
            parts.append(f"{amount} {word}{'' if amount == 1 else 's'}")
    return ", ".join(parts) or "0 seconds"


def _coerce(value: object, *, allow_disabled: bool) -> timedelta | None:
    """A settings value (text, number of seconds, timedelta) as a timedelta, or None if disabled."""
    if isinstance(value, str):
        return parse_duration(value, allow_disabled=allow_disabled)
    if isinstance(value, timedelta):
        if value < timedelta(0):
            raise DurationError(str(value), "negative")
        if value > LONGEST:
            raise DurationError(str(value), _TOO_LARGE)
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


@dataclass(frozen=True, slots=True)
class DurationUnit:
    """Marks a settings field as a duration, and what its value counts.

    ``name`` is a :class:`~datetime.timedelta` keyword (``seconds``, ``milliseconds``) for a
    numeric field, or ``""`` for a field that holds a timedelta (:data:`Duration`). A numeric
    field keeps its type; text is converted to its unit (``whole``: an exact int).
    """

    name: str
    whole: bool = False

    @property
    def size(self) -> timedelta:
        """One of the unit (one second for a timedelta field)."""
        return timedelta(**{self.name or "seconds": 1})

    def as_timedelta(self, value: object) -> timedelta | None:
        """A field's value as a timedelta (``None``: disabled)."""
        if value is None or isinstance(value, timedelta):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return self.size * value
        raise TypeError(f"not a duration value: {value!r}")

    def to_unit(self, value: Any) -> Any:
        """Before pydantic's number check: text or a timedelta becomes a number of the unit.

        Plain numbers (and numeric text) pass untouched, so they keep their unit, type and
        bounds exactly as before.
        """
        if isinstance(value, str):
            if _PLAIN_NUMBER.fullmatch(value.strip()):
                self.to_unit(float(value))  # refuses what is too large
                return value
            parsed = parse_duration(value, allow_disabled=False, bare_unit=self.name)
            assert parsed is not None  # allow_disabled=False never gives None
            return self._count(value, parsed)
        if isinstance(value, timedelta):
            if value < timedelta(0):
                raise DurationError(str(value), "negative")
            if value > LONGEST:
                raise DurationError(str(value), _TOO_LARGE)
            return self._count(str(value), value)
        if isinstance(value, bool):  # TOML's true is no duration, though Python counts it 1
            raise DurationError(repr(value).lower(), "true/false is not a duration")
        if isinstance(value, int | float) and (
            not math.isfinite(value) or abs(value) > LONGEST / self.size
        ):
            raise DurationError(str(value), f"{_TOO_LARGE}, in {self.name or 'seconds'}")
        return value

    def _count(self, text: str, value: timedelta) -> float | int:
        whole, remainder = divmod(value, self.size)
        if not remainder:
            return whole
        if self.whole:
            raise DurationError(
                text, f"{describe_duration(value)} is not a whole number of {self.name}"
            )
        return value / self.size


_PLAIN_NUMBER = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_SECONDS: Final = DurationUnit("seconds")
_WHOLE_SECONDS: Final = DurationUnit("seconds", whole=True)
_MILLISECONDS: Final = DurationUnit("milliseconds", whole=True)
_TIMEDELTA: Final = DurationUnit("")


_INPUT_SCHEMA: Final = {
    "anyOf": [{"type": "string"}, {"type": "number", "minimum": 0}],
    "description": "A duration: '1h30m', 'hours=1,minutes=30', 'PT1H30M' or a number of seconds.",
    "examples": ["15m", "1h30m", "hours=1,minutes=2.5", "PT30M", 3600],
}

Duration = Annotated[
    timedelta,
    _TIMEDELTA,
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
    _TIMEDELTA,
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


def _number_schema(unit: DurationUnit) -> WithJsonSchema:
    return WithJsonSchema(
        {
            "anyOf": [{"type": "number", "minimum": 0}, {"type": "string"}],
            "description": f"A number of {unit.name}, or a duration: '1h30m', "
            "'hours=1,minutes=30', 'PT1H30M'.",
        },
        mode="validation",
    )


Seconds = Annotated[float, _SECONDS, BeforeValidator(_SECONDS.to_unit), _number_schema(_SECONDS)]
"""A float number of seconds that also accepts every duration notation (``"2m"`` -> 120.0)."""

WholeSeconds = Annotated[
    int, _WHOLE_SECONDS, BeforeValidator(_WHOLE_SECONDS.to_unit), _number_schema(_WHOLE_SECONDS)
]
"""An int number of seconds that also accepts every duration notation (``"PT2M"`` -> 120)."""

Milliseconds = Annotated[
    int, _MILLISECONDS, BeforeValidator(_MILLISECONDS.to_unit), _number_schema(_MILLISECONDS)
]
"""An int number of milliseconds (a bare number is milliseconds) or a duration (``"1m"``)."""


def duration_fields(model: type[Any]) -> dict[str, DurationUnit]:
    """The duration fields of a pydantic model class, by name, with what they count."""
    return {
        name: marker
        for name, info in model.model_fields.items()
        for marker in info.metadata
        if isinstance(marker, DurationUnit)
    }
