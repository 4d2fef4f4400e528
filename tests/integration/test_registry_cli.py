"""The registry through the command line, on PostgreSQL: loads are all or nothing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import select

from orchestrator.store import IdpSession, Provider, ProviderSession

from .support import Stack, json_lines

pytestmark = pytest.mark.integration

PROVIDERS = """\
[[providers]]
name = "wiki"
protocol = "oidc"
client_id = "wiki-client"
backchannel_logout_uri = "https://wiki.example.test/oidc/backchannel-logout"

[[providers]]
name = "chat"
protocol = "oidc"
client_id = "chat-client"
backchannel_logout_uri = "https://chat.example.test/backchannel-logout"
full_logout_on_rp_initiated = true
"""

# One new good provider, one update of an existing one, one without `protocol`.
BAD_PROVIDERS = """\
[[providers]]
name = "gamma"
protocol = "oidc"
client_id = "gamma-client"
backchannel_logout_uri = "https://gamma.example.test/bcl"

[[providers]]
name = "wiki"
protocol = "oidc"
client_id = "changed-by-a-refused-file"
backchannel_logout_uri = "https://wiki.example.test/changed"

[[providers]]
name = "delta"
client_id = "delta-client"
backchannel_logout_uri = "https://delta.example.test/bcl"
"""

SESSIONS = [
    {"kind": "session", "session_id": "s-1", "user_id": "alice", "ip": "192.0.2.10"},
    {"kind": "session", "session_id": "s-2", "user_id": "bob"},
    {"kind": "provider_session", "session_id": "s-1", "provider": "wiki", "sid": "w1", "sub": "a"},
    {"kind": "provider_session", "session_id": "s-1", "provider": "chat", "sid": "c1", "sub": "a"},
    {"kind": "provider_session", "session_id": "s-2", "provider": "wiki", "sid": "w2", "sub": "b"},
]

# A new session and a good link to it, then a link naming a provider nobody loaded.
BAD_SESSIONS = [
    {"kind": "session", "session_id": "s-3", "user_id": "carol"},
    {"kind": "provider_session", "session_id": "s-3", "provider": "wiki", "sid": "w3"},
    {"kind": "provider_session", "session_id": "s-1", "provider": "no-such-rp", "sid": "x"},
]


def _write(path: Path, content: str) -> str:
    path.write_text(content, encoding="utf-8")
    return str(path)


def _providers(stack: Stack) -> dict[str, Provider]:
    with stack.db() as db:
        return {p.name: p for p in db.scalars(select(Provider))}


def _links(stack: Stack) -> set[tuple[str, str, str | None]]:
    with stack.db() as db:
        return {(p.session_id, p.provider, p.sid) for p in db.scalars(select(ProviderSession))}


def _sessions(stack: Stack) -> dict[str, str]:
    with stack.db() as db:
        return {s.session_id: s.user_id for s in db.scalars(select(IdpSession))}


def test_providers_and_sessions_round_trip_and_refusals(stack: Stack, tmp_path: Path) -> None:
    """Valid files load through the CLI; invalid ones are refused whole, naming the problem."""
    loaded = stack.cli("providers", "load", _write(tmp_path / "providers.toml", PROVIDERS))
    assert loaded.returncode == 0, loaded.stderr
    assert "2 created" in loaded.stdout
    providers = _providers(stack)
    assert set(providers) == {"wiki", "chat"}
    assert providers["wiki"].protocol == "oidc"
    # Stored as the "oidc" handler parsed them (with its defaults) when one is enabled.
    assert (
        providers["wiki"].settings.items()
        >= {
            "client_id": "wiki-client",
            "backchannel_logout_uri": "https://wiki.example.test/oidc/backchannel-logout",
        }.items()
    )
    assert providers["chat"].settings["client_id"] == "chat-client"
    assert providers["chat"].full_logout_on_rp_initiated is True
    assert providers["wiki"].full_logout_on_rp_initiated is False

    imported = stack.cli(
        "sessions", "import", _write(tmp_path / "sessions.jsonl", json_lines(SESSIONS))
    )
    assert imported.returncode == 0, imported.stderr
    assert "5 created" in imported.stdout
    assert _sessions(stack) == {"s-1": "alice", "s-2": "bob"}
    assert _links(stack) == {("s-1", "wiki", "w1"), ("s-1", "chat", "c1"), ("s-2", "wiki", "w2")}

    refused = stack.cli("providers", "load", _write(tmp_path / "bad.toml", BAD_PROVIDERS))
    assert refused.returncode != 0, refused.stdout
    problem_lines = [line for line in refused.stderr.splitlines() if "'delta'" in line]
    assert problem_lines, refused.stderr
    assert any("protocol" in line for line in problem_lines), refused.stderr
    assert "gamma" not in refused.stderr  # only the bad provider is named
    after = _providers(stack)
    assert set(after) == {"wiki", "chat"}, "a refused providers file stored something"
    assert after["wiki"].settings["client_id"] == "wiki-client"
    assert after["wiki"].updated_at == providers["wiki"].updated_at

    rejected = stack.cli(
        "sessions", "import", _write(tmp_path / "bad.jsonl", json_lines(BAD_SESSIONS))
    )
    assert rejected.returncode != 0, rejected.stdout
    # The offending line is named by number, with its field and why it is refused.
    assert re.search(r"\bline 3\b.*\bprovider\b.*no such provider", rejected.stderr), (
        rejected.stderr
    )
    assert "line 1" not in rejected.stderr
    assert "line 2" not in rejected.stderr
    assert _sessions(stack) == {"s-1": "alice", "s-2": "bob"}, "a refused file stored a session"
    assert _links(stack) == {("s-1", "wiki", "w1"), ("s-1", "chat", "c1"), ("s-2", "wiki", "w2")}
