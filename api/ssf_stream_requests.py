"""What a receiver sends to manage its stream (SSF 1.0 §8.1): the request bodies."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from protocols.ssf import StreamStatus, SubjectFormat

__all__ = ["Delivery", "StatusUpdate", "StreamRequest", "SubjectRequest", "VerifyRequest"]


class Delivery(BaseModel):
    """SSF 1.0 §8.1.1 ``delivery``: push (RFC 8935) only."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["urn:ietf:rfc:8935"]
    endpoint_url: str = Field(min_length=1, max_length=2048)
    authorization_header: str | None = Field(default=None, min_length=1, max_length=4096)


class StreamRequest(BaseModel):
    """A stream configuration as a receiver sends it (create, replace or update); what the
    transmitter supplies (``iss``, ``events_supported``, ``events_delivered``,
    ``min_verification_interval``) is taken and ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stream_id: str | None = None
    delivery: Delivery | None = None
    aud: str | None = Field(default=None, min_length=1, max_length=2048)
    events_requested: list[str] | None = None
    description: str | None = Field(default=None, max_length=512)
    format: SubjectFormat | None = None
    iss: Any = None
    events_supported: Any = None
    events_delivered: Any = None
    min_verification_interval: Any = None


class StatusUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    stream_id: str
    status: StreamStatus
    reason: str | None = Field(default=None, max_length=512)


class SubjectRequest(BaseModel):
    """SSF 1.0 §8.1.3 add or remove a subject."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stream_id: str
    subject: dict[str, Any]
    verified: bool | None = None


class VerifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    stream_id: str
    state: str | None = Field(default=None, max_length=1024)
