"""Unit tests of the operator's actions (SQLite): retrying failed deliveries, replaying
rejected events, and enabling, disabling and removing providers.

Deliveries come from the real ``LogoutEngine`` of ``test_deliveries`` (its ``env``: SQLite
and an ``httpx.MockTransport`` relying party); the retry a request schedules is carried out
by that engine's ``retry``, as the ``deliver`` actor does.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any, cast

import pytest
from sqlalchemy import Engine, select

from orchestrator.errors import InputError
from orchestrator.operations import (
    DeliveryQuery,
    end_provider_sessions,
    list_deliveries,
    list_providers,
    list_rejected,
    remove_provider,
    replay_rejected,
    request_retries,
    set_enabled,
)
from orchestrator.rejection import Rejection, record_rejections
from orchestrator.store import (
    Delivery,
    DeliveryStatus,
    IdpSession,
    OutboxRow,
    Provider,
    ProviderSession,
    utcnow,
)
from orchestrator.store.sql import engine_of
from orchestrator.validation import parse_event
from schemas.redaction import REDACTED, redact, redacted_paths
from tests.unit import test_deliveries
from tests.unit.test_deliveries import _Env

from .conftest import make_event

#: The fixtures of ``test_deliveries``: its engine, relying parties and provider rp1 (s-1).
env = test_deliveries.env
one_rp = test_deliveries.one_rp


def _engine(env: _Env) -> Engine:
    return engine_of(env.database)


def _failed(env: _Env) -> tuple[str, str]:
    """A logout of s-1 whose delivery to rp1 failed for good (HTTP 400): (event, delivery)."""
    env.rps.answer("/rp1", 400)
    event_id = env.logout("s-1")
    delivery = env.deliveries(event_id)["rp1"]
    assert delivery.status == DeliveryStatus.FAILED
    return event_id, delivery.id


def _outbox(env: _Env) -> list[OutboxRow]:
    with env.database() as db:
        return list(db.scalars(select(OutboxRow).order_by(OutboxRow.id)))


# -- retrying deliveries -------------------------------------------------------------------


def test_a_failed_delivery_is_retried_by_the_retry_path(one_rp: _Env) -> None:
    """The request makes it due, writes the deliver message and the audit record together;
    the engine's retry then sends it once more and records the new attempt."""
    event_id, delivery_id = _failed(one_rp)
    report = request_retries(_engine(one_rp), "logout", "ops-alice", ids=[delivery_id])
    assert [v.id for v in report.retried] == [delivery_id]
    assert report.message_ids == [f"retry:{delivery_id}:1"]
    delivery = one_rp.delivery(delivery_id)
    assert delivery.status == DeliveryStatus.RETRYING
    assert delivery.completed_at is None
    [row] = _outbox(one_rp)
    assert (row.queue, row.actor) == ("logout.deliveries", "deliver")
    assert cast(object, row.payload) == delivery_id  # the deliver actor's one argument
    assert row.message_id == f"retry:{delivery_id}:1"
    [asked] = one_rp.audit("delivery.retry_requested")
    assert asked.detail["actor"] == "ops-alice"
    assert asked.detail["last_error"] == "HTTP 400"
    assert (asked.event_id, asked.provider) == (event_id, "rp1")

    one_rp.rps.answer("/rp1", 200)
    one_rp.engine().retry([delivery_id])
    delivery = one_rp.delivery(delivery_id)
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.SUCCEEDED, 2)
    [succeeded] = one_rp.audit("delivery.succeeded")
    assert succeeded.detail["attempt"] == 2
    assert len(one_rp.audit("delivery.failed")) == 1


def test_each_retry_generation_settles_the_logout_anew(one_rp: _Env) -> None:
    """partial when the delivery failed; after a retry that fails again, partial again
    under the next key; after one that succeeds, success: the latest record is the word."""
    event_id, delivery_id = _failed(one_rp)
    for answer in (400, 200):
        request_retries(_engine(one_rp), "logout", "ops", ids=[delivery_id])
        one_rp.rps.answer("/rp1", answer)
        one_rp.engine().retry([delivery_id])
    settled = one_rp.audit("logout.settled")
    assert [(r.event_id, r.outcome) for r in settled] == [
        (event_id, "partial"),
        (event_id, "partial"),
        (event_id, "success"),
    ]
    assert [r.detail.get("retries_requested") for r in settled] == [None, 1, 2]
    assert settled[-1].detail["deliveries"]["succeeded"] == 1
    one_rp.engine().settle({event_id})  # settling the same generation again adds nothing
    assert len(one_rp.audit("logout.settled")) == 3


def test_a_retry_that_fails_again_is_recorded_again(one_rp: _Env) -> None:
    """Each attempt's final record has its own key: a second failure is in the trail too."""
    _, delivery_id = _failed(one_rp)
    request_retries(_engine(one_rp), "logout", "ops", ids=[delivery_id])
    one_rp.engine().retry([delivery_id])
    failures = one_rp.audit("delivery.failed")
    assert [f.detail["attempt"] for f in failures] == [1, 2]
    assert one_rp.delivery(delivery_id).status == DeliveryStatus.FAILED
    again = request_retries(_engine(one_rp), "logout", "ops", ids=[delivery_id])
    assert again.message_ids == [f"retry:{delivery_id}:2"]


def test_a_succeeded_delivery_is_refused_and_nothing_applied(one_rp: _Env) -> None:
    """One succeeded id among failed ones refuses the request, naming it; nothing written."""
    _, failed_id = _failed(one_rp)
    one_rp.rps.answer("/rp1", 200)
    one_rp.session("s-2", "alice", {"rp1": "sid-2"})
    ok_id = one_rp.deliveries(one_rp.logout("s-2"))["rp1"].id
    with pytest.raises(InputError) as refused:
        request_retries(_engine(one_rp), "logout", "ops", ids=[failed_id, ok_id, "nope"])
    messages = {p.where: p.message for p in refused.value.problems}
    assert set(messages) == {ok_id, "nope"}
    assert "never sent again" in messages[ok_id]
    assert one_rp.delivery(failed_id).status == DeliveryStatus.FAILED
    assert _outbox(one_rp) == []
    assert one_rp.audit("delivery.retry_requested") == []


def test_a_delivery_on_its_way_is_left_alone(one_rp: _Env) -> None:
    """A retrying delivery is reported in flight: no message, no record."""
    one_rp.rps.answer("/rp1", 503)
    event_id = one_rp.logout("s-1")
    delivery_id = one_rp.deliveries(event_id)["rp1"].id
    report = request_retries(_engine(one_rp), "logout", "ops", ids=[delivery_id])
    assert report.retried == []
    assert [(v.id, v.status) for v in report.in_flight] == [(delivery_id, "retrying")]
    assert _outbox(one_rp) == []


def test_retry_failed_selects_by_provider_and_time(env: _Env) -> None:
    """--failed takes the failed deliveries of the provider, changed since the time."""
    env.provider("rp1")
    env.provider("rp2")
    env.session("s-1", "alice", {"rp1": "a", "rp2": "b"})
    env.rps.answer("/rp1", 400)
    env.rps.answer("/rp2", 400)
    event_id = env.logout("s-1")
    rp1 = env.deliveries(event_id)["rp1"].id
    later = DeliveryQuery(provider="rp1", since=utcnow() + timedelta(minutes=1))
    assert request_retries(_engine(env), "logout", "ops", failed=later).retried == []
    chosen = DeliveryQuery(provider="rp1", since=utcnow() - timedelta(minutes=1))
    report = request_retries(_engine(env), "logout", "ops", failed=chosen)
    assert [v.id for v in report.retried] == [rp1]
    assert env.deliveries(event_id)["rp2"].status == DeliveryStatus.FAILED


def test_list_deliveries_filters_and_cuts(env: _Env) -> None:
    """Filters combine; a limit keeps the latest, oldest first, and counts the rest."""
    env.provider("rp1")
    env.session("s-1", "alice", {"rp1": "a"})
    env.session("s-2", "alice", {"rp1": "b"})
    env.session("s-3", "alice", {"rp1": "c"})
    env.rps.answer("/rp1", 400, 200, 400)
    events = [env.logout(s) for s in ("s-1", "s-2", "s-3")]
    failed = DeliveryQuery(status=DeliveryStatus.FAILED)
    page = list_deliveries(_engine(env), failed, None)
    assert [v.event_id for v in page.items] == [events[0], events[2]]
    assert not page.cut
    cut = list_deliveries(_engine(env), DeliveryQuery(), 2)
    assert (len(cut.items), cut.total, cut.cut) == (2, 3, True)
    assert [v.event_id for v in cut.items] == events[1:]
    one = list_deliveries(_engine(env), DeliveryQuery(event_id=events[1]), None)
    assert [(v.status, v.last_status_code) for v in one.items] == [("succeeded", 200)]
    assert one.items[0].as_json()["event_id"] == events[1]


@pytest.mark.parametrize("full_logout", [False, True])
def test_end_provider_sessions_logs_users_out_elsewhere_only_when_asked(
    one_rp: _Env, full_logout: bool
) -> None:
    """rp1 has full_logout_on_rp_initiated; removing it ends only its own sessions (alice
    stays signed in, at rp2 too) unless the operator asks for --full-logout."""
    one_rp.provider("rp2")
    one_rp.session("s-1", "alice", {"rp2": "sid-rp2-s1"})
    with one_rp.database.begin() as db:
        rp1 = db.get(Provider, "rp1")
        assert rp1 is not None
        rp1.full_logout_on_rp_initiated = True
    report = end_provider_sessions(_engine(one_rp), "logout", "rp1", "ops", full_logout=full_logout)
    assert report.full_logout is full_logout
    engine = one_rp.engine()
    for row in _outbox(one_rp):
        assert (row.payload["provider_only"], row.payload["full_logout"]) == (
            not full_logout,
            full_logout,
        )
        engine.handle(row.payload, row.message_id)
    with one_rp.database() as db:
        idp = db.get(IdpSession, "s-1")
        ended = {ps.provider: ps.ended_at is not None for ps in db.scalars(select(ProviderSession))}
    assert idp is not None
    assert (idp.ended_at is not None) is full_logout
    assert ended == {"rp1": True, "rp2": full_logout}
    [record] = one_rp.audit("provider.sessions_ending")
    assert record.detail["full_logout"] is full_logout


def test_a_provider_logout_cannot_be_both_full_and_provider_only() -> None:
    with pytest.raises(InputError, match="full_logout and provider_only contradict"):
        parse_event(
            make_event("logout.provider", session_id="s-1", provider="rp1", full_logout=True)
            | {"provider_only": True},
            "event",
        )


# -- rejected events -----------------------------------------------------------------------


def _reject(env: _Env, payload: Any, message_id: str) -> int:
    text = payload if isinstance(payload, str) else json.dumps(payload)
    record_rejections(_engine(env), [Rejection(message_id, text, ["a problem then"])])
    [view] = [
        v for v in list_rejected(_engine(env), None, None).items if v.message_id == message_id
    ]
    return view.id


def test_a_rejected_event_that_passes_now_is_replayed_once(env: _Env) -> None:
    """Published through the outbox with an event.replayed record linking it; twice: once."""
    event = make_event("logout.user", session_id="s-1")
    rejected_id = _reject(env, event, "m-rejected")
    report = replay_rejected(_engine(env), "logout", rejected_id, "ops")
    assert (report.event_id, report.already) == (event["event_id"], False)
    [row] = _outbox(env)
    assert (row.message_id, row.actor, row.queue) == (
        f"replay:{rejected_id}",
        "handle_event",
        "logout.events",
    )
    assert row.payload["event_id"] == event["event_id"]
    [replayed] = env.audit("event.replayed")
    assert replayed.event_id == event["event_id"]
    assert replayed.detail["rejected_record"] == rejected_id
    assert replayed.detail["rejected_message_id"] == "m-rejected"
    assert replayed.detail["actor"] == "ops"
    again = replay_rejected(_engine(env), "logout", rejected_id, "ops")
    assert again.already
    assert len(_outbox(env)) == 1
    assert len(env.audit("event.replayed")) == 1
    [view] = list_rejected(_engine(env), None, None).items
    assert view.replayed_as == event["event_id"]
    assert view.problems == ["a problem then"]


def test_a_rejected_event_still_invalid_is_refused_with_its_problems(env: _Env) -> None:
    """Its problems, as validation names them; nothing written."""
    rejected_id = _reject(env, make_event("logout.user"), "m-bad")
    not_json = _reject(env, "{not json", "m-garbage")
    with pytest.raises(InputError) as refused:
        replay_rejected(_engine(env), "logout", rejected_id, "ops")
    assert [p.field for p in refused.value.problems] == ["session_id"]
    with pytest.raises(InputError, match="invalid JSON"):
        replay_rejected(_engine(env), "logout", not_json, "ops")
    with pytest.raises(InputError, match="no rejected event 999"):
        replay_rejected(_engine(env), "logout", 999, "ops")
    assert _outbox(env) == []
    assert env.audit("event.replayed") == []


def test_a_rejected_event_stored_redacted_is_not_replayed(env: _Env) -> None:
    """A masked value is not the published one: refused naming each field, nothing written."""
    event = make_event("session.started", session_id="s-1", user_id="u", device_id="cookie-1")
    event["request"] = {"args": {"id_token_hint": "eyJhbGciOi.eyJzdWIi.c2ln", "lang": "en"}}
    rejected_id = _reject(env, redact(event), "m-masked")
    with pytest.raises(InputError) as refused:
        replay_rejected(_engine(env), "logout", rejected_id, "ops")
    fields = sorted(p.field for p in refused.value.problems)
    assert fields == ["device_id", "request.args.id_token_hint"]
    assert "publish the event again" in refused.value.problems[0].message
    assert _outbox(env) == []
    assert env.audit("event.replayed") == []


def test_a_redacted_event_with_other_problems_names_them_all(env: _Env) -> None:
    """A masked field and a value today's contract refuses: both named in one refusal."""
    event = make_event("session.started", session_id="s-1", user_id="u", device_id="cookie-1")
    event["occurred_at"] = "yesterday"
    rejected_id = _reject(env, redact(event), "m-masked-and-wrong")
    with pytest.raises(InputError) as refused:
        replay_rejected(_engine(env), "logout", rejected_id, "ops")
    fields = sorted(p.field for p in refused.value.problems)
    assert fields == ["device_id", "occurred_at"]
    assert _outbox(env) == []


def test_redacted_paths_name_every_masked_value() -> None:
    """Keys masked whole, a JWT masked inside a text, in lists too; nothing when clean."""
    masked = redact({"a": [{"token": "t"}, "x eyJhbGciOi.eyJzdWIi.c2ln y"], "b": 1})
    assert redacted_paths(masked) == ["a.0.token", "a.1"]
    assert redacted_paths(redact({"a": ["fine"], "device_id": None})) == []
    assert redacted_paths(REDACTED) == [""]


def test_list_rejected_since(env: _Env) -> None:
    """--since keeps those received at or after it."""
    _reject(env, "x", "m-1")
    assert list_rejected(_engine(env), utcnow() + timedelta(minutes=1), None).items == []
    assert len(list_rejected(_engine(env), utcnow() - timedelta(minutes=1), None).items) == 1


# -- providers -----------------------------------------------------------------------------


def test_list_providers_with_method_and_open_sessions(one_rp: _Env) -> None:
    """Method from the handler; no handler says so; counts are of open provider sessions."""
    one_rp.provider("front", protocol="iframe")
    one_rp.session("s-2", "bob", {"rp1": "b", "front": "f"})
    with one_rp.database.begin() as db:
        db.add(Provider(name="legacy", protocol="other", enabled=True, settings={}))
    views = {v.name: v for v in list_providers(_engine(one_rp), one_rp.handlers)}
    assert (views["rp1"].method, views["rp1"].open_sessions) == ("backchannel", 2)
    assert views["front"].method == "frontchannel_iframe"
    assert views["legacy"].method == "none (no handler enabled)"
    one_rp.logout("s-1")
    views = {v.name: v for v in list_providers(_engine(one_rp), one_rp.handlers)}
    assert views["rp1"].open_sessions == 1


def test_a_disabled_provider_gets_no_deliveries(one_rp: _Env) -> None:
    """Disabled: its deliveries end skipped; enabled again: sent. Each change audited."""
    engine = _engine(one_rp)
    assert set_enabled(engine, one_rp.handlers, "rp1", False, "ops")
    assert not set_enabled(engine, one_rp.handlers, "rp1", False, "ops")
    event_id = one_rp.logout("s-1")
    assert one_rp.deliveries(event_id)["rp1"].status == DeliveryStatus.SKIPPED
    assert one_rp.rps.paths() == []
    assert set_enabled(engine, one_rp.handlers, "rp1", True, "ops")
    one_rp.session("s-2", "alice", {"rp1": "b"})
    assert one_rp.deliveries(one_rp.logout("s-2"))["rp1"].status == DeliveryStatus.SUCCEEDED
    kinds = [(r.type, r.detail["actor"]) for r in one_rp.audit() if r.type.startswith("provider.")]
    assert kinds == [("provider.disabled", "ops"), ("provider.enabled", "ops")]


def test_enabling_an_unserved_provider_or_an_unknown_one_is_refused(env: _Env) -> None:
    with env.database.begin() as db:
        db.add(Provider(name="legacy", protocol="other", enabled=False, settings={}))
    with pytest.raises(InputError, match="no enabled handler serves 'other'"):
        set_enabled(_engine(env), env.handlers, "legacy", True, "ops")
    with pytest.raises(InputError, match="did you mean legacy"):
        set_enabled(_engine(env), env.handlers, "legasy", True, "ops")


def test_remove_is_refused_while_sessions_are_open(one_rp: _Env) -> None:
    """Named count and --end-sessions; after the logout, removed with its history rows."""
    with pytest.raises(InputError, match=r"1 provider session.*--end-sessions"):
        remove_provider(_engine(one_rp), "rp1", "ops")
    one_rp.logout("s-1")
    removed = remove_provider(_engine(one_rp), "rp1", "ops")
    assert removed == {"deliveries": 1, "provider_sessions": 1}
    with one_rp.database() as db:
        assert db.get(Provider, "rp1") is None
        assert list(db.scalars(select(ProviderSession))) == []
        assert list(db.scalars(select(Delivery))) == []
    [record] = one_rp.audit("provider.removed")
    assert record.detail == {"actor": "ops", **removed}


def test_end_provider_sessions_publishes_one_logout_each_once(one_rp: _Env) -> None:
    """One logout.provider per open session (initiator admin, the actor); the same ids
    again on a second run, so nothing is published twice; handled, they end the sessions."""
    one_rp.session("s-2", "bob", {"rp1": "b"})
    report = end_provider_sessions(_engine(one_rp), "logout", "rp1", "ops")
    rows = _outbox(one_rp)
    assert sorted(r.message_id for r in rows) == sorted(report.message_ids)
    assert {(r.payload["type"], r.payload["initiator"], r.payload["actor"]) for r in rows} == {
        ("logout.provider", "admin", "ops")
    }
    assert {r.payload["session_id"] for r in rows} == {"s-1", "s-2"}
    again = end_provider_sessions(_engine(one_rp), "logout", "rp1", "ops")
    assert sorted(again.message_ids) == sorted(report.message_ids)
    assert len(_outbox(one_rp)) == 2
    engine = one_rp.engine()
    for row in rows:
        engine.handle(row.payload, row.message_id)
    assert list_providers(_engine(one_rp), one_rp.handlers)[0].open_sessions == 0
    assert remove_provider(_engine(one_rp), "rp1", "ops")["provider_sessions"] == 2
