"""The service's request and response bodies; ``/v1/openapi.json`` is generated from them
(and from the event contract in :mod:`schemas`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.event_status import EventState
from orchestrator.operations import DeliveryView, ProviderView, RejectedView
from orchestrator.store import DeliveryStatus
from schemas import DeviceReason, SessionView
from schemas.fields import Identifier, Method, Timestamp, UrlPath, UserAgent

__all__ = [
    "AcceptedEvent",
    "BindingCheck",
    "BindingVerdict",
    "DeliveriesAnswer",
    "DeliveryItem",
    "DeviceAnswer",
    "EventsAnswer",
    "Health",
    "LogoutAnswer",
    "ProblemBody",
    "ProblemItem",
    "ProvidersAnswer",
    "RejectedAnswer",
    "RevokeAnswer",
    "Seen",
    "SeenAnswer",
    "SessionAnswer",
    "UserSessions",
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AcceptedEvent(_Body):
    """One event of a POST /v1/events: ``accepted`` now, or the state of an earlier copy."""

    event_id: str
    type: str
    status: Literal["accepted", EventState]


class EventsAnswer(_Body):
    """202 when some event is new (recorded and enqueued), 200 when all were known."""

    events: list[AcceptedEvent]
    queued: int = Field(
        description="accepted events kept in the outbox because the broker did not answer; "
        "a worker's relay publishes them"
    )


class DeliveryItem(_Body):
    delivery_id: str
    provider: str
    status: DeliveryStatus
    attempts: int


class LogoutAnswer(_Body):
    """A logout: where its event stands, the deliveries by status, and each delivery."""

    event_id: str
    status: EventState
    completed: bool = Field(description="every back-channel delivery final or retrying")
    timed_out: bool = Field(description="the wait ended before the logout completed")
    deliveries: dict[str, int]
    items: list[DeliveryItem]


class BindingCheck(_Body):
    """A request of the session to judge: its address, and what it asked (for the audit)."""

    ip: str = Field(min_length=1, max_length=64, description="IPv4 or IPv6 address")
    path: UrlPath | None = None
    method: Method | None = None
    user_agent: UserAgent | None = None


class BindingVerdict(_Body):
    ok: bool
    session_id: str
    reason: str | None = Field(None, description="why the binding broke (ok = false)")
    event_id: str | None = Field(None, description="the session.binding_violation published")
    published: bool = Field(
        description="the violation reached the broker (else it waits in the outbox)"
    )


class Seen(_Body):
    at: Timestamp | None = Field(
        None, description="when the session was seen (RFC 3339 with an offset); default now"
    )


class SeenAnswer(_Body):
    session_id: str
    open: bool


class SessionAnswer(_Body):
    session_id: Identifier
    revoked: list[str] = Field(description="older sessions the per-user limit ended")


class Health(_Body):
    status: Literal["ok", "ready", "not ready"]
    checks: dict[str, str] = Field(default_factory=dict)


class ProblemItem(_Body):
    where: str
    field: str
    message: str


class ProblemBody(_Body):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[ProblemItem] = Field(default_factory=list)
    checks: dict[str, str] = Field(default_factory=dict)


class UserSessions(_Body):
    """``GET /v1/users/{user_id}/sessions``: the user's open sessions, newest first."""

    user_id: str
    sessions: list[SessionView]


class RevokeAnswer(_Body):
    """The user's revocation of one of their sessions was accepted: its ``session.revoke``
    is in the outbox and (unless ``queued``) on the broker; follow it at /v1/logouts/{id}."""

    event_id: str
    session_id: str
    queued: int = Field(description="1 when the broker did not answer: a relay publishes it")


class DeviceAnswer(_Body):
    """Whether a login about to complete comes from a known device (``remember_device``)."""

    user_id: str
    known: bool
    reason: DeviceReason


class DeliveriesAnswer(_Body):
    """The latest ``limit`` deliveries selected, oldest first; ``total`` matched."""

    deliveries: list[DeliveryView]
    total: int


class RejectedAnswer(_Body):
    """The latest ``limit`` rejected messages, oldest first; ``total`` matched."""

    rejected_events: list[RejectedView]
    total: int


class ProvidersAnswer(_Body):
    providers: list[ProviderView]
