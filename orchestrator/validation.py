"""Turning pydantic's validation errors into problems that name the place, field and reason."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from pydantic import ValidationError

from orchestrator.errors import InputError, Problem
from schemas import Event, event_adapter

__all__ = ["parse_event", "parse_event_lines", "problems_from"]

#: Objects between two progress reports.
_REPORT_EVERY = 1000


def _field(loc: tuple[int | str, ...], tagged: bool) -> str:
    parts = [str(p) for p in loc]
    if tagged and len(parts) > 1:
        parts = parts[1:]  # pydantic puts a tagged union's tag ("logout.user") first
    return ".".join(parts)


def problems_from(exc: ValidationError, where: str, *, tagged: bool = False) -> list[Problem]:
    """One :class:`Problem` per pydantic error, e.g. ``line 3: session_id: Field required``.

    ``tagged`` for a discriminated union, whose errors start with the tag.
    """
    return [
        Problem(where, _field(err["loc"], tagged), err["msg"].removeprefix("Value error, "))
        for err in exc.errors()
    ]


def parse_event(raw: Any, where: str = "") -> Event:
    """Validate one event (a mapping or JSON text); raise :class:`InputError` if it is bad."""
    try:
        if isinstance(raw, str | bytes):
            return event_adapter.validate_json(raw)
        return event_adapter.validate_python(raw)
    except ValidationError as exc:
        raise InputError(problems_from(exc, where, tagged=True)) from exc


def _numbered_objects(text: str) -> Iterator[tuple[str, Any]]:
    stripped = text.strip()
    if not stripped:
        return
    if stripped.startswith("{"):
        try:
            # A single (possibly pretty-printed) JSON object.
            yield "event 1", json.loads(stripped)
            return
        except json.JSONDecodeError:
            pass  # not one object: read it as JSON lines below
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield f"line {number}", json.loads(line)
        except json.JSONDecodeError as exc:
            yield f"line {number}", _BadJSON(exc.msg, exc.colno)


class _BadJSON:
    def __init__(self, message: str, column: int) -> None:
        self.message = f"invalid JSON: {message} (column {column})"


def parse_event_lines(
    text: str, progress: Callable[[str, int, int], None] | None = None
) -> list[Event]:
    """Parse one JSON object or JSON lines; every bad line is reported, none is returned.

    ``progress("validating", done, total)`` hears how many lines were read, of how many.
    """
    events: list[Event] = []
    problems: list[Problem] = []
    total = text.count("\n") + (not text.endswith("\n"))
    for done, (where, raw) in enumerate(_numbered_objects(text), start=1):
        if progress is not None and done % _REPORT_EVERY == 0:
            progress("validating", done, total)
        if isinstance(raw, _BadJSON):
            problems.append(Problem(where, "", raw.message))
            continue
        try:
            events.append(parse_event(raw, where))
        except InputError as exc:
            problems.extend(exc.problems)
    if progress is not None:
        progress("validating", total, total)
    if problems:
        raise InputError(problems)
    if not events:
        raise InputError([Problem("input", "", "no event found")])
    return events
