"""Screening raw broker messages before dramatiq sees them.

dramatiq trusts what it fetches: bytes that do not decode make its consumer restart and
drop the messages it had prefetched beside them; a message for an unknown actor is
dead-lettered; one whose arguments do not fit the actor, or that holds what the database
cannot store (a NUL character), fails and is retried for hours, then dead-lettered. Each
such message is refused here instead, once, with a reason: :func:`screen` returns the
:class:`~orchestrator.rejection.Rejection` to record (``rejected_events`` and an
``event.rejected`` audit record with the raw bytes), and the message is acknowledged.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import dramatiq
from dramatiq import Message
from dramatiq.common import q_name
from dramatiq.errors import DecodeError

from orchestrator.queues import DELIVER_ACTOR, HANDLE_EVENT_ACTOR
from orchestrator.rejection import MAX_ID, Rejection, raw_detail, raw_text, rejection_id

if TYPE_CHECKING:
    from workers.outage import Health

__all__ = ["MAX_DEPTH", "Rejecter", "Screened", "screen"]

#: Records rejected messages (in the database) before they are acknowledged.
Rejecter = Callable[[Sequence[Rejection]], None]


class Screened:
    """A broker whose consumers screen what they fetch. Set by the worker once it runs:
    the outages to ride out, and where rejections go (without a rejecter, nothing is
    screened: a publishing command)."""

    health: Health | None = None
    rejecter: Rejecter | None = None


#: Deepest nesting of a message's arguments (an event is a few levels deep).
MAX_DEPTH = 32

#: The one argument each actor takes, and what it must be.
_ARGUMENT: Mapping[str, tuple[type, str]] = {
    HANDLE_EVENT_ACTOR: (dict, "the event, a JSON object"),
    DELIVER_ACTOR: (str, "a delivery id, a string"),
}


def _reason(exc: BaseException) -> str:
    cause = exc.__cause__ or exc
    text = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    return f"{type(cause).__name__}: {text}" if text else type(cause).__name__


def _unstorable(value: Any, depth: int = 0) -> str | None:
    """Why ``value`` cannot be handled as data, or None: nested too deep, or a NUL."""
    if depth > MAX_DEPTH:
        return f"nested deeper than {MAX_DEPTH} levels"
    if isinstance(value, str):
        if "\0" in value:
            return "holds a NUL character (U+0000), which no field may contain"
        return None
    if isinstance(value, Mapping):
        for key, item in value.items():
            problem = _unstorable(key, depth + 1) or _unstorable(item, depth + 1)
            if problem:
                return problem
    elif isinstance(value, list | tuple):
        for item in value:
            problem = _unstorable(item, depth + 1)
            if problem:
                return problem
    return None


def _problem(
    message: Message[Any], actors: Mapping[str, dramatiq.Actor[Any, Any]], option: str | None
) -> str | None:
    """What is wrong with a decoded ``message``, or None."""
    message_id = message.message_id
    if not isinstance(message_id, str) or not 0 < len(message_id) <= MAX_ID:
        return f"message_id: must be a string of 1 to {MAX_ID} characters"
    if not message_id.isprintable():
        return "message_id: holds control characters"
    if not isinstance(message.options, dict):
        return "options: must be an object"
    if option is not None and not isinstance(message.options.get(option), str):
        return f"options: must hold the broker's {option}"
    actor = actors.get(message.actor_name) if isinstance(message.actor_name, str) else None
    if actor is None:
        return (
            f"actor_name: no actor {str(message.actor_name)[:100]!r} here; "
            f"known: {', '.join(sorted(actors))}"
        )
    if not isinstance(message.kwargs, dict):
        return "kwargs: must be an object"
    try:
        inspect.signature(actor.fn).bind(*message.args, **message.kwargs)
    except TypeError as exc:
        return f"args: {actor.actor_name} takes one argument: {exc}"
    expected = _ARGUMENT.get(actor.actor_name)
    if expected is not None and message.args and not isinstance(message.args[0], expected[0]):
        return f"args: {actor.actor_name}'s argument must be {expected[1]}"
    unstorable = _unstorable([message.args, message.kwargs])
    if unstorable:
        return f"args: {unstorable}"
    return None


def screen(
    actors: Mapping[str, dramatiq.Actor[Any, Any]],
    queue_name: str,
    data: bytes,
    option: str | None = None,
) -> Message[Any] | Rejection:
    """The message ``data`` holds, or the rejection to record for it (see the module).

    ``option``: the option the broker needs in every message (Redis: ``redis_message_id``).
    """
    try:
        message: Message[Any] = Message.decode(data)
    except (DecodeError, RecursionError) as exc:
        undecodable = (
            f"message: not a dramatiq message ({_reason(exc)}); publish with "
            "`logout-orchestrator publish` or as the README's wire format says"
        )
        return Rejection(
            rejection_id(None, data), raw_text(data), [undecodable], raw=raw_detail(data)
        )
    problem = _problem(message, actors, option)
    if problem is None and message.queue_name != queue_name:
        problem = f"queue_name: says {str(message.queue_name)[:100]!r}, found on {queue_name!r}"
    if problem is None and actors[message.actor_name].queue_name != q_name(queue_name):
        problem = f"actor_name: {message.actor_name} does not take messages from {queue_name!r}"
    if problem is None:
        return message
    event = message.args[0] if isinstance(message.args, tuple) and message.args else None
    event_id = event.get("event_id") if isinstance(event, dict) else None
    return Rejection(
        rejection_id(message.message_id, data),
        raw_text(data),
        [problem],
        event_id=event_id if isinstance(event_id, str) else None,
        raw=raw_detail(data),
    )
