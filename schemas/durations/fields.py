"""pydantic types for duration settings, and the marker that says what a field counts.

:data:`Duration` and :data:`OptionalDuration` hold a :class:`~datetime.timedelta`;
:data:`Seconds`, :data:`WholeSeconds` and :data:`Milliseconds` keep a plain number in their
unit and accept every notation too. :func:`duration_fields` finds them on a settings model.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, Final

from pydantic import BeforeValidator, PlainSerializer, PlainValidator, WithJsonSchema

from schemas.durations.formatting import describe_duration, format_duration
from schemas.durations.notation import (
    LONGEST,
    TOO_LARGE,
    DurationError,
    parse_duration,
    timedelta_of,
)

__all__ = [
    "Duration",
    "DurationUnit",
    "Milliseconds",
    "OptionalDuration",
    "Seconds",
    "WholeSeconds",
    "duration_fields",
]


def _coerce(value: object, *, allow_disabled: bool) -> timedelta | None:
    """A settings value (text, number of seconds, timedelta) as a timedelta, or None if disabled."""
    if isinstance(value, str):
        return parse_duration(value, allow_disabled=allow_disabled)
    if isinstance(value, timedelta):
        if value < timedelta(0):
            raise DurationError(str(value), "negative")
        if value > LONGEST:
            raise DurationError(str(value), TOO_LARGE)
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
        return timedelta_of(str(value), {"seconds": value})
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
                raise DurationError(str(value), TOO_LARGE)
            return self._count(str(value), value)
        if isinstance(value, bool):  # TOML's true is no duration, though Python counts it 1
            raise DurationError(repr(value).lower(), "true/false is not a duration")
        if isinstance(value, int | float) and (
            not math.isfinite(value) or abs(value) > LONGEST / self.size
        ):
            raise DurationError(str(value), f"{TOO_LARGE}, in {self.name or 'seconds'}")
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
