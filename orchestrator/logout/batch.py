"""What the engine knows of each message after each stage, as frozen values.

A message is read into a :class:`Logout` (or refused); intake makes each logout it owns an
:class:`Owned`; ending makes that an :class:`Ended`; recording its deliveries a
:class:`Begun`. Each value holds exactly what is known by then, so no stage looks at a field
an earlier one has not filled.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from orchestrator.errors import InputError
from orchestrator.store import DeliveryStatus
from protocols import LogoutContext, ProtocolHandler, ProviderInfo, ProviderSessionInfo
from schemas import Event, LogoutProvider, LogoutUser

__all__ = [
    "Begun",
    "Ended",
    "HandleResult",
    "Logout",
    "Message",
    "Outcome",
    "Owned",
    "Refused",
    "Work",
]


class HandleResult(StrEnum):
    REJECTED = "rejected"
    DUPLICATE = "duplicate"
    COMPLETED = "completed"
    RECORDED = "recorded"  # session activity (session.started / session.seen)
    #: A live worker holds the event (its lease runs): try this message again later.
    BUSY = "busy"


@dataclass(frozen=True, slots=True)
class Message:
    """One message of a batch, as the broker handed it over."""

    index: int
    raw: Any
    message_id: str


@dataclass(frozen=True, slots=True)
class Refused:
    """A message that is no event this engine handles, and why."""

    message: Message
    problems: InputError


@dataclass(frozen=True, slots=True)
class Logout:
    """A message that is a valid logout event."""

    message: Message
    event: Event
    #: The event's id as text, computed once (the stages ask for it several times a delivery).
    event_id: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "event_id", str(self.event.event_id))

    @property
    def session_id(self) -> str | None:
        """The single session the event names, if it names one."""
        session_id = getattr(self.event, "session_id", None)
        return str(session_id) if session_id is not None else None

    @property
    def plan_id(self) -> str | None:
        """The stage plan the event asks for, if any."""
        event = self.event
        return event.plan_id if isinstance(event, LogoutUser | LogoutProvider) else None


@dataclass(frozen=True, slots=True)
class Owned:
    """A logout whose message owns its event: first seen, or resumed (``resumed``)."""

    logout: Logout
    resumed: bool


@dataclass(frozen=True, slots=True)
class Ended:
    """An owned logout once what it names is ended: ``sessions_ended`` IdP sessions, for
    ``user_id`` (from the event, the sessions ended, or the session it named)."""

    owned: Owned
    targets: tuple[tuple[str, str], ...]
    sessions_ended: int
    user_id: str | None


@dataclass(frozen=True, slots=True)
class Work:
    """One claimed attempt of one delivery, with everything its handler needs."""

    delivery_id: str
    created_at: datetime
    attempt: int
    provider: ProviderInfo
    session: ProviderSessionInfo
    context: LogoutContext
    handler: ProtocolHandler | None


@dataclass(frozen=True, slots=True)
class Begun:
    """An ended logout with its deliveries recorded: ``works`` inserted (and leased) now,
    ``reopened`` open ones of an earlier attempt, to be claimed."""

    ended: Ended
    works: tuple[Work, ...]
    reopened: tuple[str, ...]

    @property
    def logout(self) -> Logout:
        return self.ended.owned.logout

    @property
    def event_id(self) -> str:
        return self.logout.event_id

    @property
    def resumed(self) -> bool:
        """Some of its deliveries were recorded by an earlier attempt of the event."""
        return self.ended.owned.resumed or bool(self.reopened)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt came to."""

    status: DeliveryStatus
    detail: str | None = None
    status_code: int | None = None
    next_attempt_at: datetime | None = None
    retry_after: float | None = None
    retry_in: float = 0.0
    #: Fields the error adds to the audit record (``DeliveryError.facts``).
    facts: Mapping[str, Any] = field(default_factory=dict)
    #: Seconds the provider took to answer (None: nothing was sent).
    latency: float | None = None
    #: ``transient`` or ``permanent`` for a failed attempt (the error's type), else None.
    error_class: str | None = None
