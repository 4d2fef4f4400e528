"""The session registry and the logout ledger, as typed SQLAlchemy models.

State is data: every status column has an enum here and a set of terminal values.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from orchestrator.store.core import ID, METADATA, UTCDateTime, audit_records

__all__ = [
    "OPEN_DELIVERY_STATUSES",
    "TERMINAL_DELIVERY_STATUSES",
    "AuditRow",
    "Base",
    "Delivery",
    "DeliveryStatus",
    "EventRecord",
    "EventStatus",
    "IdpSession",
    "OutboxRow",
    "PlanRow",
    "Provider",
    "ProviderSession",
    "ProviderSubscription",
    "ReceivedSet",
    "RejectedEvent",
    "utcnow",
]


def utcnow() -> datetime:
    """Now, timezone-aware in UTC: every timestamp we store is."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = METADATA
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
    }


class EventStatus(StrEnum):
    PROCESSING = "processing"
    COMPLETED = "completed"


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"


TERMINAL_DELIVERY_STATUSES = frozenset(
    {DeliveryStatus.SUCCEEDED, DeliveryStatus.FAILED, DeliveryStatus.SKIPPED}
)
#: Still to be attempted: the complement of :data:`TERMINAL_DELIVERY_STATUSES`.
OPEN_DELIVERY_STATUSES = frozenset(DeliveryStatus) - TERMINAL_DELIVERY_STATUSES


class Provider(Base):
    """A relying party or service provider the IdP logs users out of."""

    __tablename__ = "providers"

    name: Mapped[str] = mapped_column(ID, primary_key=True)
    protocol: Mapped[str] = mapped_column(String(64))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    full_logout_on_rp_initiated: Mapped[bool] = mapped_column(Boolean, default=False)
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class IdpSession(Base):
    """A session at the IdP itself."""

    __tablename__ = "idp_sessions"
    __table_args__ = (
        Index("ix_idp_sessions_user_active", "user_id", "ended_at"),
        # The expiry sweeper's two scans: only open, unclaimed sessions are indexed.
        Index(
            "ix_idp_sessions_due_absolute",
            "expires_at",
            postgresql_where=text("ended_at IS NULL AND expiry_claimed_at IS NULL"),
            sqlite_where=text("ended_at IS NULL AND expiry_claimed_at IS NULL"),
        ),
        Index(
            "ix_idp_sessions_due_idle",
            "last_seen",
            postgresql_where=text("ended_at IS NULL AND expiry_claimed_at IS NULL"),
            sqlite_where=text("ended_at IS NULL AND expiry_claimed_at IS NULL"),
        ),
    )

    session_id: Mapped[str] = mapped_column(ID, primary_key=True)
    user_id: Mapped[str] = mapped_column(ID)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(Text)
    ended_at: Mapped[datetime | None]
    end_reason: Mapped[str | None] = mapped_column(String(64))
    ended_by_event: Mapped[str | None] = mapped_column(String(36), index=True)
    remember_me: Mapped[bool] = mapped_column(Boolean, default=False)
    stay_signed_in: Mapped[bool] = mapped_column(Boolean, default=False)
    # Network / GeoIP binding: the modes the login chose and what its address looked like.
    network_binding: Mapped[str] = mapped_column(String(32), default="no_binding")
    geoip_binding: Mapped[str] = mapped_column(String(32), default="no_binding")
    asn: Mapped[int | None] = mapped_column(Integer)
    as_org: Mapped[str | None] = mapped_column(ID)
    as_network: Mapped[str | None] = mapped_column(String(64))
    continent: Mapped[str | None] = mapped_column(String(8))
    country: Mapped[str | None] = mapped_column(String(8))
    city: Mapped[str | None] = mapped_column(ID)
    lat: Mapped[float | None] = mapped_column(Float)
    long: Mapped[float | None] = mapped_column(Float)
    # Remember device: the SHA-256 of the device cookie id the login gave (never the id
    # itself) and whether the login came from a known device, and why (set once, at the
    # first session.started; null for sessions that never reported one).
    device_hash: Mapped[str | None] = mapped_column(String(64))
    known_device: Mapped[bool | None] = mapped_column(Boolean)
    known_device_reason: Mapped[str | None] = mapped_column(String(16))
    #: Set when the expiry sweeper writes this session's ``session.expired`` to the outbox.
    expiry_claimed_at: Mapped[datetime | None]


class ProviderSession(Base):
    """A user's session at one provider, opened through one IdP session."""

    __tablename__ = "provider_sessions"
    __table_args__ = (UniqueConstraint("session_id", "provider"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # Looked up by the unique (session_id, provider) index: its leading column serves.
    session_id: Mapped[str] = mapped_column(
        ForeignKey("idp_sessions.session_id", ondelete="CASCADE")
    )
    provider: Mapped[str] = mapped_column(ForeignKey("providers.name", ondelete="CASCADE"))
    #: The protocol's identifiers (OIDC ``sid``/``sub``, SAML ``name_id`` ...), as its
    #: handler accepted them: opaque to the host, never looked up by.
    identifiers: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, server_default="{}")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None]
    # Indexed: a logout finds the provider sessions it ended by this column.
    ended_by_event: Mapped[str | None] = mapped_column(String(36), index=True)


class ProviderSubscription(Base):
    """A provider that hears of every ended session of a user (``user_id``), or of every
    user (``user_id`` null), whether or not it has a provider session for it: discovery
    opens one for it when the session ends (an SSF stream's subjects, say)."""

    __tablename__ = "provider_subscriptions"
    __table_args__ = (
        UniqueConstraint("provider", "user_id"),
        # Nulls are distinct to the constraint: one every-user row per provider needs this.
        Index(
            "uq_provider_subscriptions_every_user",
            "provider",
            unique=True,
            postgresql_where=text("user_id IS NULL"),
            sqlite_where=text("user_id IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(
        ForeignKey("providers.name", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[str | None] = mapped_column(ID, index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class EventRecord(Base):
    """An accepted event: the dedupe key and how far its handling got."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_status_attempted", "status", "attempted_at"),)

    event_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    type: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=EventStatus.PROCESSING)
    message_id: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]]
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    attempted_at: Mapped[datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[datetime | None]
    #: While in the future, a live worker handles the event (renewed by its lease keeper):
    #: neither recovery nor a second copy of its message takes it over.
    lease_until: Mapped[datetime | None]


class RejectedEvent(Base):
    """An event that failed validation, kept whole so nothing is silently dropped."""

    __tablename__ = "rejected_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(String(64), unique=True)
    event_id: Mapped[str | None] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    payload: Mapped[str] = mapped_column(Text)
    problems: Mapped[list[str]] = mapped_column(JSON)


class Delivery(Base):
    """One logout of one provider session, caused by one event."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("event_id", "provider_session_id"),
        Index("ix_deliveries_status_next", "status", "next_attempt_at"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    # Looked up by the unique (event_id, provider_session_id) index: its leading column serves.
    event_id: Mapped[str] = mapped_column(ForeignKey("events.event_id"))
    provider_session_id: Mapped[int] = mapped_column(ForeignKey("provider_sessions.id"))
    provider: Mapped[str] = mapped_column(ID)
    session_id: Mapped[str] = mapped_column(ID)
    user_id: Mapped[str] = mapped_column(ID)
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_status_code: Mapped[int | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    next_attempt_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]


class OutboxRow(Base):
    """A message to publish, written in the transaction of the decision that made it.

    The relay (``orchestrator.relay``) publishes unsent rows (``sent_at`` null) under their
    ``message_id``, leasing them first (``lease_owner``/``lease_until``) so that of several
    relays one publishes each; it deletes a sent row once the pipeline has recorded its event.
    """

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_sent_at", "sent_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    #: The broker message id, kept on every (re)publication; also the outbox's dedupe key.
    message_id: Mapped[str] = mapped_column(String(64), unique=True)
    event_id: Mapped[str] = mapped_column(String(36), index=True)
    queue: Mapped[str] = mapped_column(ID)
    actor: Mapped[str] = mapped_column(String(64))
    #: The event as the contract serialises it: the message's one argument.
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    lease_owner: Mapped[str | None] = mapped_column(String(36))
    lease_until: Mapped[datetime | None]


class PlanRow(Base):
    """A front-channel stage plan (``schemas.LogoutPlan`` as JSON), by its ``plan_id``."""

    __tablename__ = "plans"

    plan_id: Mapped[str] = mapped_column(ID, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    body: Mapped[dict[str, Any]] = mapped_column()


class ReceivedSet(Base):
    """A Security Event Token an upstream transmitter pushed (``POST /v1/ssf/push``): its
    ``jti`` per issuer, so a replay is refused, kept until its ``iat`` is too old to pass
    the freshness check anyway (``expires_at``), then deleted."""

    __tablename__ = "ssf_received_sets"

    #: Hex SHA-256 of the issuer and the jti (RFC 8417: a jti is unique per issuer).
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    stream: Mapped[str] = mapped_column(String(64))
    jti: Mapped[str] = mapped_column(ID)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class AuditRow(Base):
    """One audit record (the Core table :data:`~orchestrator.store.core.audit_records`)."""

    __table__ = audit_records

    seq: Mapped[int]
    id: Mapped[str]
    dedupe_key: Mapped[str]
    at: Mapped[datetime]
    type: Mapped[str]
    event_id: Mapped[str | None]
    user_id: Mapped[str | None]
    session_id: Mapped[str | None]
    provider: Mapped[str | None]
    outcome: Mapped[str]
    detail: Mapped[dict[str, Any]]
