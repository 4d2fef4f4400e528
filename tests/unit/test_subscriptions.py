"""Provider subscriptions: a subscribed provider gets a delivery for every ended session of
its user (or of every user) without a provider session of its own, for every ending."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from orchestrator import Runtime
from orchestrator.logout import HandleResult
from orchestrator.store import ProviderSession, utcnow
from orchestrator.subscriptions import EVERY_USER, subscribe, subscribers, unsubscribe
from tests.unit.conftest import make_event, store_providers
from tests.unit.test_engine import _delivered, _handle, _processor

STREAMS = """
[[providers]]
name = "gateway"
protocol = "ssf"
endpoint_url = "https://gw.example/push"
aud = "https://gw.example"

[[providers]]
name = "mdm"
protocol = "ssf"
endpoint_url = "https://mdm.example/push"
aud = "https://mdm.example"

[[providers]]
name = "off"
protocol = "ssf"
enabled = false
endpoint_url = "https://off.example/push"
aud = "https://off.example"
"""


@pytest.fixture
def subscribed(populated: Runtime) -> Runtime:
    """gateway hears of alice's sessions, mdm of everyone's, off (disabled) of alice's."""
    store_providers(populated, STREAMS)
    with populated.database.begin() as db:
        assert subscribe(db, "gateway", "alice", utcnow())
        assert not subscribe(db, "gateway", "alice", utcnow())  # once
        assert subscribe(db, "mdm", EVERY_USER, utcnow())
        assert not subscribe(db, "mdm", EVERY_USER, utcnow())
        assert subscribe(db, "off", "alice", utcnow())
    return populated


ENDINGS: list[tuple[str, dict[str, Any], set[str]]] = [
    ("logout.user", {"session_id": "s-1"}, {"s-1"}),
    ("session.revoke", {"session_id": "s-2", "initiator": "admin"}, {"s-2"}),
    ("session.expired", {"session_id": "s-2", "reason": "idle", "initiator": "system"}, {"s-2"}),
    ("user.revoke_all", {"user_id": "alice", "initiator": "admin"}, {"s-1", "s-2", "s-3"}),
    ("session.terminate_others", {"user_id": "alice", "keep_session_id": "s-2"}, {"s-1", "s-3"}),
]


@pytest.mark.parametrize(("kind", "fields", "sessions"), ENDINGS, ids=[e[0] for e in ENDINGS])
def test_every_ending_reaches_the_subscribed_providers(
    subscribed: Runtime, kind: str, fields: dict[str, Any], sessions: set[str]
) -> None:
    """Each ended session of alice gets a delivery to gateway and mdm, none to the disabled
    stream, beside those of its own provider sessions."""
    event_id = _handle(subscribed, kind, **fields)
    delivered = _delivered(subscribed, event_id)
    streams = {(s, p) for s, p in delivered if p in ("gateway", "mdm", "off")}
    assert streams == {(s, p) for s in sessions for p in ("gateway", "mdm")}


def test_a_binding_violation_reaches_them_too(subscribed: Runtime) -> None:
    violation: dict[str, Any] = {
        "binding": {
            "reason": "geoip.country",
            "previous_value": {"continent": "EU", "country": "SE"},
            "new_value": {"continent": "EU", "country": "GB"},
        },
        "ip": {"previous": "89.160.20.112", "new": "81.2.69.142"},
    }
    event_id = _handle(
        subscribed, "session.binding_violation", session_id="s-3", initiator="policy", **violation
    )
    assert {p for s, p in _delivered(subscribed, event_id)} == {"chat", "gateway", "mdm"}


def test_only_the_subscribed_user_and_the_catch_all(subscribed: Runtime) -> None:
    """bob's logout reaches mdm (every user) but not gateway (alice only)."""
    event_id = _handle(subscribed, "logout.user", session_id="s-9")
    assert {p for _, p in _delivered(subscribed, event_id)} == {"wiki", "mdm"}


def test_an_existing_provider_session_is_used_not_doubled(subscribed: Runtime) -> None:
    """A stream with its own provider session of s-1 (identifiers kept) gets one delivery."""
    subscribed.registry.import_lines(
        ['{"kind": "provider_session", "session_id": "s-1", "provider": "gateway"}']
    )
    event_id = _handle(subscribed, "logout.user", session_id="s-1")
    assert sorted(p for s, p in _delivered(subscribed, event_id)).count("gateway") == 1
    with subscribed.database() as db:
        count = db.scalars(select(ProviderSession).where(ProviderSession.provider == "gateway"))
        assert len(list(count)) == 1


def test_unsubscribe(subscribed: Runtime) -> None:
    with subscribed.database.begin() as db:
        assert subscribers(db, "gateway") == ["alice"]
        assert unsubscribe(db, "gateway", "alice")
        assert not unsubscribe(db, "gateway", "alice")
        assert subscribers(db, "gateway") == []
    event_id = _handle(subscribed, "logout.user", session_id="s-1")
    assert "gateway" not in {p for _, p in _delivered(subscribed, event_id)}


def test_one_batch_reaches_only_the_users_subscribed(populated: Runtime) -> None:
    """With no subscription to every user: in one batch, alice's logout reaches gateway,
    bob's does not, and a batch of users none is subscribed to attaches nothing."""
    store_providers(populated, STREAMS)
    with populated.database.begin() as db:
        assert subscribe(db, "gateway", "alice", utcnow())
    alice = make_event("logout.user", session_id="s-1")
    bob = make_event("logout.user", session_id="s-9")
    results = _processor(populated).handle_batch([(alice, "m-a"), (bob, "m-b")])
    assert results == [HandleResult.COMPLETED, HandleResult.COMPLETED]
    assert "gateway" in {p for _, p in _delivered(populated, str(alice["event_id"]))}
    assert {p for _, p in _delivered(populated, str(bob["event_id"]))} == {"wiki"}
    with populated.database.begin() as db:
        assert unsubscribe(db, "gateway", "alice")
    again = make_event("logout.user", session_id="s-2")
    _processor(populated).handle_batch([(again, "m-c")])
    assert "gateway" not in {p for _, p in _delivered(populated, str(again["event_id"]))}
