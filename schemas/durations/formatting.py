"""Writing a duration back: the compact notation, and plain words."""

from __future__ import annotations

from datetime import timedelta
from typing import Final

from schemas.durations.notation import DISABLED, DurationError

__all__ = ["describe_duration", "format_duration"]


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
