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

from schemas.durations.fields import (
    Duration,
    DurationUnit,
    Milliseconds,
    OptionalDuration,
    Seconds,
    WholeSeconds,
    duration_fields,
)
from schemas.durations.formatting import describe_duration, format_duration
from schemas.durations.notation import (
    DAYS_PER_MONTH,
    DAYS_PER_YEAR,
    DISABLED,
    NOTATIONS,
    DurationError,
    parse_duration,
)

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
