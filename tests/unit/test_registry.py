"""Loading providers and importing sessions: validated whole, applied all or nothing."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from sqlalchemy import func, select

from orchestrator import InputError, Problem, Runtime, SessionRegistry
from orchestrator.store import IdpSession, Provider, ProviderSession
from protocols import ProtocolHandler


class StrictHandler(ProtocolHandler):
    """Requires ``client_id`` in the provider settings."""

    protocol = "strict"

    def validate_settings(self, provider: str, settings: Mapping[str, Any]) -> Any:
        if "client_id" not in settings:
            raise InputError([Problem(f"provider {provider!r}", "client_id", "is required")])
        return {"client_id": str(settings["client_id"])}


def _count(runtime: Runtime, model: Any) -> int:
    with runtime.sessions() as db:
        return int(db.scalar(select(func.count()).select_from(model)) or 0)


def test_providers_load_and_upsert(runtime: Runtime) -> None:
    """Loading twice updates instead of duplicating; protocol settings are kept."""
    text = '[[providers]]\nname = "wiki"\nprotocol = "oidc"\nclient_id = "w"\n'
    first = runtime.registry.load_providers_file(text, "p.toml")
    second = runtime.registry.load_providers_file(text.replace('"w"', '"w2"'), "p.toml")
    assert (first.created, first.updated, second.created, second.updated) == (1, 0, 0, 1)
    with runtime.sessions() as db:
        row = db.get(Provider, "wiki")
        assert row is not None
        assert row.settings == {"client_id": "w2"}
        assert row.enabled is True


def test_provider_without_handler_warns(runtime: Runtime) -> None:
    """A protocol with no enabled handler is stored, with a warning that says so."""
    summary = runtime.registry.load_providers_file(
        '[[providers]]\nname = "x"\nprotocol = "cas"\n', "p.toml"
    )
    assert summary.warnings == (
        "provider 'x': no handler for protocol 'cas' is enabled; its settings are stored "
        "unchecked and its logouts are skipped",
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[[providers]]\nname = "a"\nprotocol = "oidc"\n[[providers]]\nname = "b"\n',
            "provider 'b': protocol: Field required",
        ),
        (
            '[[providers]]\nname = "a b"\nprotocol = "oidc"\n',
            "provider 'a b': name: String should match pattern",
        ),
        (
            '[[providers]]\nname = "a"\nprotocol = "oidc"\nenabled = "maybe"\n',
            "provider 'a': enabled: Input should be a valid boolean",
        ),
        (
            '[[providers]]\nname = "a"\nprotocol = "oidc"\n[[providers]]\nname = "a"\n'
            'protocol = "oidc"\n',
            "provider 'a': name: appears more than once in the file",
        ),
        ('[[provider]]\nname = "a"\n', "p.toml: provider: unknown top-level key"),
        ("[[providers]\n", "p.toml: invalid TOML"),
    ],
)
def test_invalid_providers_file_is_refused_whole(
    runtime: Runtime, text: str, expected: str
) -> None:
    """Any bad provider refuses the whole file, naming provider and field."""
    with pytest.raises(InputError) as caught:
        runtime.registry.load_providers_file(text, "p.toml")
    assert any(str(p).startswith(expected) for p in caught.value.problems), caught.value
    assert _count(runtime, Provider) == 0


def test_handler_validation_refuses_the_file(runtime: Runtime) -> None:
    """The protocol handler's own checks apply on load, and nothing is stored on failure."""
    registry = SessionRegistry(runtime.sessions, {"strict": StrictHandler(runtime.settings)})
    text = (
        '[[providers]]\nname = "good"\nprotocol = "strict"\nclient_id = "g"\n'
        '[[providers]]\nname = "bad"\nprotocol = "strict"\n'
    )
    with pytest.raises(InputError, match=r"provider 'bad': client_id: is required"):
        registry.load_providers_file(text, "p.toml")
    assert _count(runtime, Provider) == 0
    registry.load_providers_file(text.split('[[providers]]\nname = "bad"')[0], "p.toml")
    with runtime.sessions() as db:
        row = db.get(Provider, "good")
        assert row is not None
        assert row.settings == {"client_id": "g"}


def test_sessions_import_creates_and_updates(populated: Runtime) -> None:
    """Importing the same lines again updates in place."""
    assert _count(populated, IdpSession) == 4
    assert _count(populated, ProviderSession) == 6
    summary = populated.registry.import_lines(
        ['{"kind": "provider_session", "session_id": "s-1", "provider": "wiki", "sid": "new"}']
    )
    assert (summary.created, summary.updated) == (0, 1)
    with populated.sessions() as db:
        sid = db.scalar(
            select(ProviderSession.sid).where(
                ProviderSession.session_id == "s-1", ProviderSession.provider == "wiki"
            )
        )
    assert sid == "new"
    assert _count(populated, ProviderSession) == 6


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (['{"kind": "session", "session_id": "s-5"}'], "line 2: user_id: Field required"),
        (['{"kind": "token", "x": 1}'], "line 2: Input tag 'token' found using 'kind'"),
        (["", "{oops"], "line 2: Invalid JSON"),
        (
            ['{"kind": "provider_session", "session_id": "s-1", "provider": "nope"}'],
            "line 2: provider: no such provider",
        ),
        (
            ['{"kind": "provider_session", "session_id": "s-77", "provider": "wiki"}'],
            "line 2: session_id: no such IdP session",
        ),
        (
            ['{"kind": "session", "session_id": "s-1", "user_id": "mallory"}'],
            "line 2: user_id: belongs to user 'alice'",
        ),
    ],
)
def test_invalid_sessions_are_refused_whole(
    populated: Runtime, lines: list[str], expected: str
) -> None:
    """A bad line refuses the file, naming the line (or record) and the field."""
    good = '{"kind": "session", "session_id": "s-new", "user_id": "dave"}'
    with pytest.raises(InputError) as caught:
        populated.registry.import_lines([good, *lines] if len(lines) == 1 else lines)
    rendered = [str(p) for p in caught.value.problems]
    assert any(r.startswith(expected) for r in rendered), rendered
    with populated.sessions() as db:
        assert db.get(IdpSession, "s-new") is None


def test_python_api_records_sessions(runtime: Runtime) -> None:
    """IdP components record sessions and provider sessions through the Python API."""
    runtime.registry.load_providers_file('[[providers]]\nname="w"\nprotocol="oidc"\n', "p")
    runtime.registry.record_session("s-1", "u-1", ip="81.2.69.142", user_agent="ff")
    runtime.registry.record_provider_session("s-1", "w", sid="abc", sub="u-1")
    with runtime.sessions() as db:
        link = db.scalar(select(ProviderSession))
        assert link is not None
        assert (link.sid, link.sub, link.provider) == ("abc", "u-1", "w")
    with pytest.raises(InputError, match="sid: String should have at most 255 characters"):
        runtime.registry.record_provider_session("s-1", "w", sid="x" * 300)
