"""Screening raw messages: each kind of poison is refused with the field named; a valid
message passes; what is stored of a refused one is bounded and printable."""

from __future__ import annotations

import json
import uuid
from typing import Any

import dramatiq
import pytest
from dramatiq import Message
from dramatiq.brokers.stub import StubBroker

from orchestrator.rejection import (
    AUDIT_RAW_BYTES,
    Rejection,
    raw_detail,
    raw_text,
    rejection_id,
)
from schemas.fields import printable
from workers.screening import MAX_DEPTH, screen

QUEUE = "logout.events"


@pytest.fixture
def actors() -> dict[str, dramatiq.Actor[Any, Any]]:
    broker = StubBroker()

    def handle_event(event: Any) -> None:
        """Stands for the real actor: one positional argument."""

    def deliver(delivery_id: str) -> None:
        """Stands for the real actor: one positional argument."""

    return {
        "handle_event": dramatiq.actor(broker=broker, queue_name=QUEUE)(handle_event),
        "deliver": dramatiq.actor(broker=broker, queue_name="logout.deliveries")(deliver),
    }


def _data(**fields: Any) -> bytes:
    message = {
        "queue_name": QUEUE,
        "actor_name": "handle_event",
        "args": [{"type": "logout.user", "event_id": "e-1"}],
        "kwargs": {},
        "options": {"redis_message_id": str(uuid.uuid4())},
        "message_id": str(uuid.uuid4()),
        "message_timestamp": 0,
    }
    return json.dumps({**message, **fields}).encode()


def _deep(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"x": value}
    return value


def test_a_valid_message_passes(actors: dict[str, dramatiq.Actor[Any, Any]]) -> None:
    """The message our publisher writes is returned decoded."""
    assert isinstance(screen(actors, QUEUE, _data()), Message)


@pytest.mark.parametrize(
    ("data", "named"),
    [
        (b"\xff\x00 not json", "message: not a dramatiq message"),
        (b'{"hello": 1}', "message: not a dramatiq message"),
        (b"[" * 5000 + b"]" * 5000, "message: not a dramatiq message"),
        (_data(actor_name="drop_tables"), "actor_name: no actor 'drop_tables'"),
        (_data(actor_name="deliver", args=["d-1"]), "actor_name: deliver does not take"),
        (_data(args=[{}, "extra"]), "args: handle_event takes one argument"),
        (_data(args=[]), "args: handle_event takes one argument"),
        (_data(kwargs={"password": "hunter2"}), "args: handle_event takes one argument"),
        (_data(args=["logout.user"]), "args: handle_event's argument must be the event"),
        (_data(args=[{"session_id": "a\x00b"}]), "args: holds a NUL character"),
        (_data(args=[_deep(MAX_DEPTH + 1)]), f"args: nested deeper than {MAX_DEPTH}"),
        (_data(message_id="m" * 65), "message_id: must be a string of 1 to 64"),
        (_data(message_id="m\n1"), "message_id: holds control characters"),
        (_data(options=[]), "options: must be an object"),
        (_data(queue_name="logout.deliveries"), "queue_name: says 'logout.deliveries'"),
    ],
)
def test_poison_is_refused_naming_the_field(
    actors: dict[str, dramatiq.Actor[Any, Any]], data: bytes, named: str
) -> None:
    """Each poison message becomes a rejection whose one problem names what is wrong, with
    an id of at most 64 characters, the raw bytes (bounded) and no NUL in what is stored."""
    verdict = screen(actors, QUEUE, data)
    assert isinstance(verdict, Rejection)
    assert len(verdict.problems) == 1
    assert verdict.problems[0].startswith(named), verdict.problems
    assert 0 < len(verdict.message_id) <= 64
    assert "\x00" not in verdict.payload
    assert verdict.raw is not None
    assert verdict.raw["bytes"] == len(data)


def test_redis_needs_its_message_id(actors: dict[str, dramatiq.Actor[Any, Any]]) -> None:
    """On Redis a message without ``redis_message_id`` could never be acknowledged: refused
    there; RabbitMQ needs no such option."""
    data = _data(options={})
    verdict = screen(actors, QUEUE, data, "redis_message_id")
    assert isinstance(verdict, Rejection)
    assert verdict.problems == ["options: must hold the broker's redis_message_id"]
    assert isinstance(screen(actors, QUEUE, data), Message)


def test_raw_bytes_are_kept_printable_and_bounded() -> None:
    """UTF-8 stays text (control characters escaped); other bytes become base64; the audit
    copy is cut at AUDIT_RAW_BYTES and says so; a derived id is stable."""
    assert raw_detail(b"ok\x00")["text"] == "ok\\x00"
    assert "base64" in raw_detail(b"\xff\xfe\x00 binary")
    big = raw_detail(b"a" * (AUDIT_RAW_BYTES + 10))
    assert big["truncated"] is True
    assert len(big["text"]) == AUDIT_RAW_BYTES
    assert raw_text(b"x\x00\xff") == "x\\x00\\xff"
    assert printable("a" * 20, 5) == "aaaaa... (15 more characters)"
    assert rejection_id("m" * 65, b"x") == rejection_id("m" * 65, b"x")
    assert rejection_id("m" * 65, b"x").startswith("sha256:")
    assert len(rejection_id(None, b"x")) == 64


def test_stored_raw_messages_keep_no_secret() -> None:
    """A refused message's stored payload and its audit record's text mask a JWT and a
    secret-named value, as every log line does."""
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    raw = json.dumps({"request": {"args": {"id_token_hint": jwt, "password": "hunter2"}}})
    data = raw.encode() + b"\x00"
    for text in (raw_text(data), str(raw_detail(data)["text"])):
        assert jwt not in text, text
        assert "hunter2" not in text, text
        assert "[redacted]" in text
