"""The event, audit and import contracts, and their JSON Schema files."""

from __future__ import annotations

import json
from typing import Any

import pytest

from orchestrator import InputError, parse_event, parse_event_lines
from schemas import (
    BINDING_REASONS,
    EVENT_TYPES,
    LogoutProvider,
    SessionBindingViolation,
    event_adapter,
)
from schemas.jsonschema import SCHEMA_DIR, render_schemas
from tests.unit.conftest import make_event

MINIMAL: dict[str, dict[str, Any]] = {
    "logout.user": {"session_id": "s-1"},
    "logout.provider": {"session_id": "s-1", "provider": "wiki"},
    "session.revoke": {"session_id": "s-1"},
    "user.revoke_all": {"user_id": "u-1"},
    "session.terminate_others": {"user_id": "u-1", "keep_session_id": "s-1"},
    "session.expired": {"session_id": "s-1", "reason": "idle"},
    "session.binding_violation": {
        "session_id": "s-1",
        "binding": {"reason": "network.asn", "previous_value": "1", "new_value": "2"},
        "ip": {"previous": "1.2.3.4", "new": "5.6.7.8"},
    },
    "session.started": {"session_id": "s-1", "user_id": "u-1"},
    "session.seen": {"session_id": "s-1"},
}


def test_schema_files_match_the_models() -> None:
    """The committed JSON Schema files are exactly what the models generate."""
    rendered = render_schemas()
    on_disk = {p.name for p in SCHEMA_DIR.glob("*.json")}
    assert on_disk == set(rendered), "run: python -m schemas.jsonschema"
    for name, text in rendered.items():
        assert (SCHEMA_DIR / name).read_text(encoding="utf-8") == text, (
            f"{name} drifted from the models; run: python -m schemas.jsonschema"
        )


def test_event_schema_requires_type_and_common_fields() -> None:
    """Publishers in other languages see type, event_id, occurred_at and initiator required."""
    schema = json.loads((SCHEMA_DIR / "event.schema.json").read_text(encoding="utf-8"))
    variants = [schema["$defs"][ref["$ref"].split("/")[-1]] for ref in schema["oneOf"]]
    assert {v["properties"]["type"]["const"] for v in variants} == set(EVENT_TYPES)
    for variant in variants:
        assert variant["required"][:4] == ["type", "event_id", "occurred_at", "initiator"]


@pytest.mark.parametrize("kind", EVENT_TYPES)
def test_every_event_type_parses(kind: str) -> None:
    """Each event type validates from its minimal JSON form."""
    event = parse_event(make_event(kind, **MINIMAL[kind]))
    assert event.type == kind


def test_every_event_type_has_a_minimal_example() -> None:
    """The parametrised test above covers every published type."""
    assert set(MINIMAL) == set(EVENT_TYPES)


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"session_id": None}, "session_id", "Field required"),
        ({"initiator": "nobody"}, "initiator", "Input should be 'user', 'admin'"),
        ({"occurred_at": "2026-01-01T00:00:00"}, "occurred_at", "timezone"),
        ({"event_id": "42"}, "event_id", "UUID"),
        ({"sesion_id": "s-1"}, "sesion_id", "unknown field (did you mean session_id?)"),
        ({"type": "logout.everything"}, "type", "is not a known type"),
    ],
)
def test_bad_events_name_the_field_and_the_problem(
    change: dict[str, Any], field: str, message: str
) -> None:
    """A refused event says which field is wrong and why."""
    raw = {k: v for k, v in make_event("logout.user", session_id="s-1").items()}
    raw.update({k: v for k, v in change.items() if v is not None})
    for key in [k for k, v in change.items() if v is None]:
        raw.pop(key)
    with pytest.raises(InputError) as caught:
        parse_event(raw, "event 1")
    problem = caught.value.problems[0]
    assert problem.where == "event 1"
    assert problem.field == field
    assert message in problem.message


def test_missing_field_is_reported() -> None:
    """A required field that is absent is named."""
    raw = make_event("logout.user")
    with pytest.raises(InputError, match=r"session_id: Field required"):
        parse_event(raw)


def test_event_lines_report_every_bad_line_and_return_nothing() -> None:
    """A batch with a bad line is refused whole, each bad line named."""
    good = json.dumps(make_event("logout.user", session_id="s-1"))
    bad = json.dumps(make_event("session.expired", session_id="s-1", reason="tired"))
    text = "\n".join([good, "", bad, "{not json"])
    with pytest.raises(InputError) as caught:
        parse_event_lines(text)
    rendered = [str(p) for p in caught.value.problems]
    assert rendered[0].startswith("line 3: reason: Input should be 'idle' or 'absolute'")
    assert rendered[1].startswith("line 4: invalid JSON")
    assert len(rendered) == 2


def test_single_pretty_printed_object_is_accepted() -> None:
    """One indented JSON object is one event."""
    text = json.dumps(make_event("user.revoke_all", user_id="u-1"), indent=2)
    assert [e.type for e in parse_event_lines(text)] == ["user.revoke_all"]


def test_empty_input_is_refused() -> None:
    """Publishing nothing is an error, not a silent no-op."""
    with pytest.raises(InputError, match="no event found"):
        parse_event_lines("\n \n")


def test_logout_provider_defaults_to_partial_logout() -> None:
    """full_logout is false unless the publisher says otherwise."""
    event = event_adapter.validate_python(
        make_event("logout.provider", **MINIMAL["logout.provider"])
    )
    assert isinstance(event, LogoutProvider)
    assert event.full_logout is False


def test_binding_violation_keeps_the_documented_shape() -> None:
    """binding, ip, asn, geo and http_request carry exactly the documented keys."""
    event = parse_event(
        make_event("session.binding_violation", **MINIMAL["session.binding_violation"])
    )
    assert isinstance(event, SessionBindingViolation)
    dumped = event.model_dump(mode="json")
    assert set(dumped["binding"]) == {"reason", "previous_value", "new_value"}
    assert set(dumped["ip"]) == {"previous", "new"}
    assert set(dumped["asn"]) == {"asn", "as_org", "network"}
    assert set(dumped["geo"]) == {"continent", "country", "city", "lat", "long"}
    assert set(dumped["http_request"]) == {"path", "method", "args", "user_agent"}


def test_binding_reasons_are_the_eight_standard_ones() -> None:
    """The reasons match the standards file."""
    assert set(BINDING_REASONS) == {
        "network.missing",
        "network.asn",
        "network.asn_network",
        "network.ip",
        "geoip.missing",
        "geoip.continent",
        "geoip.country",
        "geoip.city",
    }
