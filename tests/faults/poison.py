"""Raw messages a publisher that skips validation could put on the events queue.

Each is written to Redis as dramatiq's broker stores a message (the id in the queue's list,
the encoded message in its ``.msgs`` hash), so the worker gets exactly these bytes.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from orchestrator.publishing import HANDLE_EVENT_ACTOR, events_queue
from tests.integration.support import logout_event

__all__ = ["RawMessage", "interleave", "raw_messages"]

#: dramatiq's Redis broker prefixes every key with its namespace.
_REDIS_NAMESPACE = "dramatiq"
_DEPTH = 500


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One raw message; ``event_id`` when what it carries is a valid event, which the
    worker may then handle as an event instead of rejecting it."""

    label: str
    data: bytes
    event_id: str | None = None


def _message(namespace: str, rid: str, **fields: Any) -> bytes:
    message: dict[str, Any] = {
        "queue_name": events_queue(namespace),
        "actor_name": HANDLE_EVENT_ACTOR,
        "args": [],
        "kwargs": {},
        "options": {"redis_message_id": rid},
        "message_id": str(uuid.uuid4()),
        "message_timestamp": int(time.time() * 1000),
    }
    message.update(fields)
    return json.dumps(message, separators=(",", ":")).encode()


def _nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = [value]
    return value


def raw_messages(namespace: str, tag: str) -> list[tuple[str, RawMessage]]:
    """Every raw case once, each under its Redis message id; ``tag`` keeps sessions apart."""
    cases: list[tuple[str, RawMessage]] = []

    def add(label: str, make: Any, event_id: str | None = None) -> None:
        rid = str(uuid.uuid4())
        cases.append((rid, RawMessage(label, make(rid), event_id)))

    def unknown(n: int) -> dict[str, Any]:
        return logout_event(f"{tag}-raw-{n}")  # no such session: handled, nothing to end

    event = unknown(0)
    add("garbage bytes", lambda rid: b"\x00\xff\xfe not a message \x80" + rid.encode())
    add("JSON that is no object", lambda rid: json.dumps([rid, 1, 2]).encode())
    add("no actor or arguments", lambda rid: json.dumps({"message_id": rid}).encode())
    add("no argument", lambda rid: _message(namespace, rid, args=[]))
    add("a number for the event", lambda rid: _message(namespace, rid, args=[42]))
    add(
        "NUL in session_id",
        lambda rid: _message(namespace, rid, args=[{**unknown(1), "session_id": "s\x00nul"}]),
    )
    add(
        "control character in session_id",
        lambda rid: _message(namespace, rid, args=[{**unknown(2), "session_id": "s\x07bell"}]),
    )
    add(
        "NUL in event_id",
        lambda rid: _message(namespace, rid, args=[{**unknown(3), "event_id": "e\x00"}]),
    )
    add("unknown actor", lambda rid: _message(namespace, rid, actor_name="no_such_actor"))
    add(
        "a second argument",
        lambda rid: _message(namespace, rid, args=[event, "extra"]),
        event["event_id"],
    )
    kwargs_event = unknown(4)
    add(
        "unexpected kwargs",
        lambda rid: _message(namespace, rid, args=[kwargs_event], kwargs={"extra": 1}),
        kwargs_event["event_id"],
    )
    long_id = unknown(5)
    add(
        "message_id of 100 characters",
        lambda rid: _message(namespace, rid, args=[long_id], message_id="m" * 100),
        long_id["event_id"],
    )
    deep = unknown(6)
    deep["request"] = {"args": {"deep": _nested(_DEPTH)}}
    add(
        f"nesting {_DEPTH} deep",
        lambda rid: _message(namespace, rid, args=[deep]),
        deep["event_id"],
    )
    return cases


def interleave(
    client: redis.Redis, namespace: str, raw: Sequence[tuple[str, RawMessage]]
) -> list[str]:
    """Put ``raw`` among the messages queued on the events queue (no worker may be running):
    the first raw message goes to the head, the others spread evenly between valid ones.
    Returns the labels in queue order (``valid`` for a valid message)."""
    queue = f"{_REDIS_NAMESPACE}:{events_queue(namespace)}"
    valid = [v.decode() if isinstance(v, bytes) else str(v) for v in client.lrange(queue, 0, -1)]
    step = max(1, len(valid) // max(1, len(raw)))
    order: list[tuple[str, str]] = []
    pending = list(raw)
    for index, rid in enumerate(valid):
        if pending and index % step == 0:
            raw_id, message = pending.pop(0)
            order.append((raw_id, message.label))
        order.append((rid, "valid"))
    order += [(raw_id, message.label) for raw_id, message in pending]
    with client.pipeline(transaction=True) as pipe:
        pipe.hset(f"{queue}.msgs", mapping={rid: message.data for rid, message in raw})
        pipe.delete(queue)
        pipe.rpush(queue, *[rid for rid, _ in order])
        pipe.execute()
    return [label for _, label in order]
