"""Turning pydantic's validation errors into problems that name the place, field and reason."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from orchestrator.errors import InputError, Problem
from schemas import Event, event_adapter
from schemas.hints import did_you_mean

__all__ = [
    "EventCheck",
    "Models",
    "load_json",
    "models_by_tag",
    "parse_event",
    "parse_event_lines",
    "problems_from",
]

#: The model a validation ran against, or for a tagged union each member by its tag.
Models = type[BaseModel] | Mapping[str, type[BaseModel]]

#: Objects between two progress reports.
_REPORT_EVERY = 1000


def _field(loc: tuple[int | str, ...], tagged: bool) -> str:
    parts = [str(p) for p in loc]
    if tagged and parts:
        parts = parts[1:]  # pydantic puts a tagged union's tag ("logout.user") first
    return ".".join(parts)


def models_by_tag(union: Any, tag: str) -> dict[str, type[BaseModel]]:
    """The members of a tagged union (``Annotated[A | B, Field(discriminator=tag)]``) by
    the value of their ``tag`` field."""
    members = get_args(get_args(union)[0]) if get_args(union) else ()
    return {get_args(m.model_fields[tag].annotation)[0]: m for m in members}


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The model an annotation holds (``RequestInfo | None`` gives ``RequestInfo``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in get_args(annotation):
        found = _model_of(argument)
        if found is not None:
            return found
    return None


def _known_fields(models: Models, loc: Sequence[int | str]) -> list[str]:
    """The fields of the model that holds the last element of ``loc`` (an unknown key)."""
    parts = list(loc)
    model: type[BaseModel] | None
    if isinstance(models, Mapping):
        model = models.get(str(parts.pop(0))) if parts else None
    else:
        model = models
    for part in parts[:-1]:
        field = model.model_fields.get(str(part)) if model is not None else None
        model = _model_of(field.annotation) if field is not None else None
    return list(model.model_fields) if model is not None else []


def problems_from(
    exc: ValidationError, where: str, *, tagged: bool = False, models: Models | None = None
) -> list[Problem]:
    """One :class:`Problem` per pydantic error, e.g. ``line 3: session_id: Field required``.

    ``tagged`` for a discriminated union, whose errors start with the tag. With ``models``
    (the model validated against, or a union's members by tag), an unknown field names the
    closest known one: ``sesion_id: unknown field (did you mean session_id?)``.
    """
    problems = []
    for err in exc.errors():
        if err["type"] in _TAG_ERRORS:  # the tag itself: name it, and what it may be
            tags = list(models) if isinstance(models, Mapping) else None
            problems.append(_tag_problem(err, where, tags))
            continue
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden" and err["loc"]:
            known = _known_fields(models, err["loc"]) if models is not None else []
            message = "unknown field" + did_you_mean(str(err["loc"][-1]), known)
        problems.append(Problem(where, _field(err["loc"], tagged), message))
    return problems


#: pydantic's errors of a discriminated union's tag: missing, or none of the known ones.
_TAG_ERRORS = frozenset({"union_tag_not_found", "union_tag_invalid"})


def _tag_problem(err: Any, where: str, tags: list[str] | None) -> Problem:
    """``type: 'logout.usr' is not a known type (did you mean logout.user?); one of: ...``,
    where pydantic names no field and words it for a developer. ``tags``: the union's (else
    those pydantic lists)."""
    context = err.get("ctx", {})
    tag_field = str(context.get("discriminator", "type")).strip("'")
    listed = [tag.strip("' ") for tag in str(context.get("expected_tags", "")).split(",")]
    expected = tags if tags is not None else [tag for tag in listed if tag]
    field = ".".join([*(str(part) for part in err["loc"]), tag_field])
    if err["type"] == "union_tag_not_found":
        message = "Field required"
    else:
        given = str(context.get("tag", ""))
        message = f"{given!r} is not a known {tag_field}" + did_you_mean(given, expected)
    if expected:
        message += f"; one of: {', '.join(expected)}"
    return Problem(where, field, message)


#: Each event type's model, for "did you mean" on an unknown field.
_EVENT_MODELS = models_by_tag(Event, "type")


def parse_event(raw: Any, where: str = "") -> Event:
    """Validate one event (a mapping or JSON text); raise :class:`InputError` if it is bad."""
    try:
        if isinstance(raw, str | bytes):
            raw = load_json(raw, where)
        return event_adapter.validate_python(raw)
    except ValidationError as exc:
        raise InputError(problems_from(exc, where, tagged=True, models=_EVENT_MODELS)) from exc


class _UndecodableError(InputError):
    """The text is no JSON at all (as opposed to JSON refused for what it holds)."""


class _Repeated(dict[str, Any]):
    """A JSON object that named a key more than once (the last value kept, as JSON
    parsers do): ``repeated`` holds each such key."""

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__(pairs)
        counts = Counter(key for key, _ in pairs)
        self.repeated = [key for key, count in counts.items() if count > 1]


#: What Python's parser reads that JSON has not.
_NON_JSON = frozenset({"NaN", "Infinity", "-Infinity"})


class _Constant:
    """``NaN``, ``Infinity`` or ``-Infinity`` where a JSON value was expected."""

    def __init__(self, name: str) -> None:
        self.name = name


class _Strict:
    """The hooks of one decoding: they note duplicate keys and non-JSON constants, which
    Python's parser accepts, so :func:`load_json` can refuse them naming their place."""

    def __init__(self) -> None:
        self.refused = False

    def pairs(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        made = dict(pairs)
        if len(made) == len(pairs):
            return made
        self.refused = True
        return _Repeated(pairs)

    def constant(self, name: str) -> _Constant:
        self.refused = True
        return _Constant(name)

    def number(self, text: str) -> float | _Constant:
        """A number with a fraction or exponent; one past a float's range (``1e999``) would
        be read as infinity, which JSON cannot say either."""
        value = float(text)
        if math.isfinite(value):
            return value
        return self.constant(text)


def _path(parent: str, part: str | int) -> str:
    return f"{parent}.{part}" if parent else str(part)


def _refusals(value: Any, where: str, at: str = "") -> Iterator[Problem]:
    """Each duplicate key and non-JSON constant in ``value``, in document order; a field
    is named as pydantic names it (``binding.reason``, ``0.type``)."""
    if isinstance(value, _Constant):
        message = (
            f"{value.name} is not JSON (RFC 8259 has no NaN or Infinity); send a number or null"
            if value.name in _NON_JSON
            else f"{value.name} is past a float's range (it would read as infinity); send a "
            "smaller number"
        )
        yield Problem(where, at, message)
    elif isinstance(value, dict):
        for key in getattr(value, "repeated", ()):
            yield Problem(
                where,
                _path(at, key),
                f"the key {key!r} is given more than once in one object; a JSON object's "
                "keys must be unique (RFC 8259): send it once",
            )
        for key, item in value.items():
            yield from _refusals(item, where, _path(at, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _refusals(item, where, _path(at, index))


def _decode(text: str | bytes, where: str, hooks: _Strict) -> Any:
    try:
        return json.loads(
            text,
            object_pairs_hook=hooks.pairs,
            parse_constant=hooks.constant,
            parse_float=hooks.number,
        )
    except RecursionError:
        reason = "nested too deeply to read (at most a few hundred levels)"
    except json.JSONDecodeError as exc:
        reason = f"invalid JSON: {exc.msg} (column {exc.colno})"
    except ValueError as exc:  # an integer over sys.get_int_max_str_digits()
        reason = f"invalid JSON: {exc}".split("; use sys.", 1)[0]
    raise _UndecodableError([Problem(where, "", reason)])


def load_json(text: str | bytes, where: str) -> Any:
    """Decode one JSON text; :class:`InputError` naming ``where`` when it is not JSON, holds a
    number too long to read (over 4300 digits) or nests too deeply to read, and naming
    ``where`` and the field for each key repeated in an object and each ``NaN`` or
    ``Infinity`` (which Python's parser would accept: RFC 8259 has neither)."""
    hooks = _Strict()
    value = _decode(text, where, hooks)
    if hooks.refused:
        raise InputError(list(_refusals(value, where)))
    return value


def _numbered_objects(text: str) -> Iterator[tuple[str, Any]]:
    stripped = text.strip()
    if not stripped:
        return
    if stripped.startswith("{"):
        try:
            # A single (possibly pretty-printed) JSON object.
            yield "event 1", load_json(stripped, "event 1")
            return
        except _UndecodableError:
            pass  # not one object: read it as JSON lines below
        except InputError as exc:  # one object, refused for what it holds
            yield "event 1", _BadJSON(exc.problems)
            return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield f"line {number}", load_json(line, f"line {number}")
        except InputError as exc:
            yield f"line {number}", _BadJSON(exc.problems)


class _BadJSON:
    """A line (or the one object) that is no JSON, or JSON refused: its problems."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = problems


#: A check of a valid event against what will handle it: ``(field, problem)`` pairs.
EventCheck = Callable[[Event], Sequence[tuple[str, str]]]


def parse_event_lines(
    text: str,
    progress: Callable[[str, int, int], None] | None = None,
    check: EventCheck | None = None,
) -> list[Event]:
    """Parse one JSON object or JSON lines; every bad line is reported, none is returned.

    ``progress("validating", done, total)`` hears how many lines were read, of how many.
    ``check`` adds what the handler would refuse of a valid event (``publish`` on
    ``memory://``: a binding mode no configured GeoIP database serves), in the same round.
    """
    events: list[Event] = []
    problems: list[Problem] = []
    total = text.count("\n") + (not text.endswith("\n"))
    for done, (where, raw) in enumerate(_numbered_objects(text), start=1):
        if progress is not None and done % _REPORT_EVERY == 0:
            progress("validating", done, total)
        if isinstance(raw, _BadJSON):
            problems.extend(raw.problems)
            continue
        try:
            event = parse_event(raw, where)
        except InputError as exc:
            problems.extend(exc.problems)
            continue
        events.append(event)
        if check is not None:
            problems.extend(Problem(where, field, message) for field, message in check(event))
    if progress is not None:
        progress("validating", total, total)
    if problems:
        raise InputError(problems)
    if not events:
        raise InputError([Problem("input", "", "no event found")])
    return events
