"""Who an event is about, as the records name it."""

from __future__ import annotations

from schemas import Event

__all__ = ["session_of", "user_of"]


def user_of(event: Event) -> str | None:
    user_id = getattr(event, "user_id", None)
    return str(user_id) if user_id is not None else None


def session_of(event: Event) -> str | None:
    session_id = getattr(event, "session_id", None)
    return str(session_id) if session_id is not None else None
