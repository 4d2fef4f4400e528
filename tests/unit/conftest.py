"""Fixtures for unit tests: SQLite in a temporary folder, the in-process broker, no network."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from orchestrator import Runtime, Settings
from orchestrator.registry import parse_providers_toml
from orchestrator.store import Provider


def make_event(kind: str, **fields: Any) -> dict[str, Any]:
    """A valid event of type ``kind`` with a fresh id; ``fields`` add or override."""
    base: dict[str, Any] = {
        "type": kind,
        "event_id": str(uuid.uuid4()),
        "occurred_at": datetime.now(UTC).isoformat(),
        "initiator": "user",
    }
    return {**base, **fields}


@pytest.fixture(autouse=True)
def _no_dns_on_provider_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading providers asks no DNS server in unit tests: every name but ``localhost``
    (127.0.0.1) does not resolve, so the egress check only warns about it."""

    def resolve(host: str, port: int) -> list[str]:
        if host == "localhost":
            return ["127.0.0.1"]
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr("orchestrator.egress_screen.system_resolve", resolve)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Embedded settings: memory broker, SQLite in tmp_path, no protocol handlers."""
    return Settings.load(
        None,
        data_dir=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'unit.db'}",
        broker_url="memory://",
        protocols=[],
        egress_allow=["127.0.0.1"],  # loopback RPs of the tests; refused by default
        worker_threads=2,
        log_level="WARNING",
    )


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    """A migrated runtime with no protocol handlers."""
    rt = Runtime.start(settings, handlers={})
    yield rt
    rt.close()


PROVIDERS_TOML = """
[[providers]]
name = "wiki"
protocol = "oidc"
client_id = "wiki"

[[providers]]
name = "chat"
protocol = "oidc"
client_id = "chat"

[[providers]]
name = "payroll"
protocol = "saml"
entity_id = "https://payroll.example.com/sp"
"""

SESSIONS = [
    '{"kind": "session", "session_id": "s-1", "user_id": "alice", "ip": "81.2.69.142"}',
    '{"kind": "session", "session_id": "s-2", "user_id": "alice"}',
    '{"kind": "session", "session_id": "s-3", "user_id": "alice"}',
    '{"kind": "session", "session_id": "s-9", "user_id": "bob"}',
    '{"kind": "provider_session", "session_id": "s-1", "provider": "wiki", "sid": "w1"}',
    '{"kind": "provider_session", "session_id": "s-1", "provider": "chat", "sid": "c1"}',
    '{"kind": "provider_session", "session_id": "s-1", "provider": "payroll", "name_id": "a@x"}',
    '{"kind": "provider_session", "session_id": "s-2", "provider": "wiki", "sid": "w2"}',
    '{"kind": "provider_session", "session_id": "s-3", "provider": "chat", "sid": "c3"}',
    '{"kind": "provider_session", "session_id": "s-9", "provider": "wiki", "sid": "w9"}',
]


def store_providers(runtime: Runtime, text: str) -> None:
    """Store the ``[[providers]]`` of ``text`` as rows, unchecked, upserted: providers no
    enabled handler serves (loaded before such were refused, or ``protocols`` changed since);
    ``providers load`` refuses them."""
    with runtime.database.begin() as db:
        for config in parse_providers_toml(text, "providers.toml"):
            db.merge(
                Provider(
                    name=config.name,
                    protocol=config.protocol,
                    enabled=config.enabled,
                    full_logout_on_rp_initiated=config.full_logout_on_rp_initiated,
                    settings=config.protocol_settings,
                    updated_at=datetime.now(UTC),
                )
            )


@pytest.fixture
def populated(runtime: Runtime) -> Runtime:
    """Three providers (stored without a handler); alice has sessions s-1..s-3, bob has s-9."""
    store_providers(runtime, PROVIDERS_TOML)
    runtime.registry.import_lines(SESSIONS)
    return runtime
