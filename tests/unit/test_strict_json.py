"""The one JSON reader of events, bodies and providers files (``load_json``): what Python's
parser accepts but JSON is not (a repeated key, NaN, Infinity) is refused, naming where."""

from __future__ import annotations

import pytest

from orchestrator.validation import load_json, parse_event_lines
from schemas.errors import InputError, Problem


def _refused(text: str) -> list[Problem]:
    with pytest.raises(InputError) as caught:
        load_json(text, "body")
    return list(caught.value.problems)


def test_a_repeated_key_is_refused_naming_it_and_its_place() -> None:
    (problem,) = _refused('{"type": "logout.user", "type": "user.revoke_all"}')
    assert (problem.where, problem.field) == ("body", "type")
    assert "'type' is given more than once" in problem.message
    (nested,) = _refused('[{}, {"binding": {"reason": 1, "reason": 2}}]')
    assert nested.field == "1.binding.reason"


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json(constant: str) -> None:
    (problem,) = _refused(f'{{"binding": {{"latitude": {constant}}}}}')
    assert problem.field == "binding.latitude"
    assert problem.message.startswith(f"{constant} is not JSON")


def test_json_lines_and_a_pretty_object_name_the_line_or_event() -> None:
    with pytest.raises(InputError) as lines:
        parse_event_lines('{"a": 1, "a": 2}\n{"b": NaN}\n')
    assert [(p.where, p.field) for p in lines.value.problems] == [("line 1", "a"), ("line 2", "b")]
    with pytest.raises(InputError) as pretty:
        parse_event_lines('{\n  "a": 1,\n  "a": 2\n}\n')
    assert [(p.where, p.field) for p in pretty.value.problems] == [("event 1", "a")]


def test_valid_json_is_read_as_before() -> None:
    assert load_json('{"a": [1, 2.5, {"b": null}], "c": "NaN"}', "body") == {
        "a": [1, 2.5, {"b": None}],
        "c": "NaN",
    }
    (problem,) = _refused('{"a": ')
    assert problem.message.startswith("invalid JSON")


def test_a_number_past_a_floats_range_is_refused_not_read_as_infinity() -> None:
    from orchestrator.validation import load_json

    with pytest.raises(InputError) as caught:
        load_json('{"binding": {"latitude": 1e999}, "n": [-1e999, 1.5]}', "body")
    past = "is past a float's range (it would read as infinity); send a smaller number"
    assert [(p.field, p.message) for p in caught.value.problems] == [
        ("binding.latitude", f"1e999 {past}"),
        ("n.0", f"-1e999 {past}"),
    ]
    assert load_json('{"x": 1e308}', "body") == {"x": 1e308}
