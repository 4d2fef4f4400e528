"""SSF streams registered over HTTP (SSF 1.0 §8.1): each is a provider of protocol ``ssf``,
written through the registry (so checked like one of the providers file, egress policy
included) and owned by the API token that created it. A receiver sees and changes only its
own streams; another's is "not found", so none learns what others registered.

A deleted stream's provider is kept, disabled and without an owner: its past deliveries
keep naming it. Its subscriptions go at once.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from api.problems import ApiProblem
from orchestrator.runtime import Runtime
from orchestrator.store import Provider, utcnow
from orchestrator.subscriptions import EVERY_USER, subscribe, subscribers, unsubscribe
from protocols.ssf import (
    PUSH_DELIVERY,
    SUPPORTED_EVENTS,
    SsfHandler,
    StreamSettings,
    StreamStatus,
    SubjectFormat,
    classify_push,
)
from schemas.errors import DeliveryError, InputError, Problem
from schemas.registry import ProviderConfig

__all__ = [
    "PREFIX",
    "Delivery",
    "StatusUpdate",
    "StreamRequest",
    "Streams",
    "SubjectRequest",
    "VerifyRequest",
]

#: The provider name of stream ``<id>`` is ``ssf-<id>``.
PREFIX: Final = "ssf-"
#: Stream settings the receiver sets, by the name it sends them under.
_FIELDS: Final[Mapping[str, str]] = {
    "endpoint_url": "delivery.endpoint_url",
    "authorization": "delivery.authorization_header",
    "subject_format": "format",
}


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


def _not_found(stream_id: str) -> ApiProblem:
    return ApiProblem(
        404,
        "no such stream",
        f"stream {stream_id!r} is not one of this token's streams; list them with "
        "GET /v1/ssf/stream",
    )


class Streams:
    """Stream configurations on the runtime's database, for the holder ``owner``."""

    def __init__(self, runtime: Runtime, handler: SsfHandler) -> None:
        self._runtime = runtime
        self._handler = handler

    # -- reading ----------------------------------------------------------------------

    def _row(self, owner: str, stream_id: str) -> StreamSettings:
        with self._runtime.database() as db:
            row = db.get(Provider, PREFIX + stream_id)
        if row is None or row.protocol != "ssf":
            raise _not_found(stream_id)
        settings = self._handler.stored_settings(row.name, row.settings)
        if not isinstance(settings, StreamSettings) or settings.owner != owner:
            raise _not_found(stream_id)
        return settings

    def read(self, owner: str, stream_id: str) -> dict[str, Any]:
        return self.configuration(stream_id, self._row(owner, stream_id))

    def listing(self, owner: str) -> list[dict[str, Any]]:
        with self._runtime.database() as db:
            rows = db.scalars(
                select(Provider)
                .where(Provider.protocol == "ssf", Provider.name.startswith(PREFIX))
                .order_by(Provider.name)
            ).all()
        return [
            self.configuration(row.name.removeprefix(PREFIX), settings)
            for row in rows
            for settings in [self._handler.stored_settings(row.name, row.settings)]
            if settings.owner == owner
        ]

    def configuration(self, stream_id: str, stream: StreamSettings) -> dict[str, Any]:
        """SSF 1.0 §8.1.1 as the receiver reads it: never the authorization header."""
        return {
            "stream_id": stream_id,
            "iss": self._handler.host.issuer,
            "aud": stream.aud,
            "delivery": {"method": PUSH_DELIVERY, "endpoint_url": stream.endpoint_url},
            "events_supported": list(SUPPORTED_EVENTS),
            "events_requested": stream.events_requested,
            "events_delivered": stream.events_delivered,
            "description": stream.description,
            "format": stream.subject_format.value,
        }

    def status(self, owner: str, stream_id: str) -> dict[str, Any]:
        stream = self._row(owner, stream_id)
        answer: dict[str, Any] = {"stream_id": stream_id, "status": stream.status.value}
        if stream.status_reason:
            answer["reason"] = stream.status_reason
        return answer

    # -- writing ----------------------------------------------------------------------

    def _store(self, stream_id: str, settings: Mapping[str, Any], enabled: bool = True) -> None:
        """Write the stream's provider through the registry: checked like the providers
        file; each problem names the field as the receiver sent it."""
        config = ProviderConfig.model_validate(
            {"name": PREFIX + stream_id, "protocol": "ssf", "enabled": enabled, **settings}
        )
        try:
            self._runtime.registry.upsert_providers([config])
        except InputError as exc:
            raise InputError(
                [Problem("body", _FIELDS.get(p.field, p.field), p.message) for p in exc.problems]
            ) from None

    def _settings(self, owner: str, body: StreamRequest, base: Mapping[str, Any]) -> dict[str, Any]:
        settings = dict(base)
        if body.delivery is not None:
            settings["endpoint_url"] = body.delivery.endpoint_url
            settings["authorization"] = body.delivery.authorization_header
        for name, value in (
            ("aud", body.aud),
            ("events_requested", body.events_requested),
            ("description", body.description),
            ("subject_format", body.format),
        ):
            if value is not None:
                settings[name] = value
        settings["owner"] = owner
        settings["allow_http"] = self._handler.settings.stream_allow_http
        return settings

    def create(self, owner: str, body: StreamRequest) -> dict[str, Any]:
        if body.delivery is None:
            raise InputError([Problem("body", "delivery", "required: the push endpoint")])
        stream_id = uuid.uuid4().hex
        settings = self._settings(owner, body, {"aud": body.aud or body.delivery.endpoint_url})
        self._store(stream_id, settings)
        if self._handler.settings.default_subjects == "ALL":
            with self._runtime.database.begin() as db:
                subscribe(db, PREFIX + stream_id, EVERY_USER, utcnow())
        return self.read(owner, stream_id)

    def update(self, owner: str, body: StreamRequest, *, replace: bool) -> dict[str, Any]:
        stream_id = _required_id(body.stream_id)
        current = self._row(owner, stream_id)
        kept = {"status": current.status.value, "status_reason": current.status_reason}
        if replace:
            if body.delivery is None:
                raise InputError([Problem("body", "delivery", "required: the push endpoint")])
            base = {**kept, "aud": body.aud or body.delivery.endpoint_url}
        else:
            base = current.model_dump(mode="json", exclude={"owner", "allow_http"})
        self._store(stream_id, self._settings(owner, body, base))
        return self.read(owner, stream_id)

    def set_status(self, owner: str, body: StatusUpdate) -> dict[str, Any]:
        current = self._row(owner, body.stream_id)
        settings = current.model_dump(mode="json")
        settings.update(status=body.status.value, status_reason=body.reason)
        self._store(body.stream_id, settings)
        return self.status(owner, body.stream_id)

    def delete(self, owner: str, stream_id: str) -> None:
        current = self._row(owner, stream_id)
        settings = current.model_dump(mode="json")
        settings.update(status="disabled", owner=None)
        self._store(stream_id, settings, enabled=False)
        with self._runtime.database.begin() as db:
            for user_id in subscribers(db, PREFIX + stream_id):
                unsubscribe(db, PREFIX + stream_id, user_id)

    def subject(self, owner: str, body: SubjectRequest, *, add: bool) -> None:
        """Subscribe the stream to the subject's user (or end that); ``add`` or remove."""
        self._row(owner, body.stream_id)
        user_id = self._user(body.subject)
        with self._runtime.database.begin() as db:
            if add:
                subscribe(db, PREFIX + body.stream_id, user_id, utcnow())
            else:
                unsubscribe(db, PREFIX + body.stream_id, user_id)

    def _user(self, subject: Mapping[str, Any]) -> str:
        """The user an RFC 9493 subject names here: ``iss_sub`` of our issuer, ``email``,
        ``opaque`` (the user id), or the ``user`` of a ``complex`` subject."""
        fmt = subject.get("format")
        found: Any = None
        if fmt == "iss_sub" and subject.get("iss") == self._handler.host.issuer:
            found = subject.get("sub")
        elif fmt == "email":
            found = subject.get("email")
        elif fmt == "opaque":
            found = subject.get("id")
        elif fmt == "complex" and isinstance(subject.get("user"), dict):
            return self._user(subject["user"])
        if not isinstance(found, str) or not found or len(found) > 255:
            raise InputError(
                [
                    Problem(
                        "body",
                        "subject",
                        "must name a user: iss_sub (our issuer), email, opaque, or complex "
                        "with user",
                    )
                ]
            )
        return found

    def verify(self, owner: str, body: VerifyRequest) -> None:
        """Push the verification SET with ``state`` to the stream (SSF 1.0 §8.1.4.2)."""
        stream = self._row(owner, body.stream_id)
        if stream.status is StreamStatus.DISABLED:
            raise ApiProblem(409, "stream disabled", "enable the stream before verifying it")
        request = self._handler.verification_request(body.stream_id, stream, body.state, utcnow())
        [result] = self._runtime.sender().send_all([request])
        try:
            if isinstance(result, DeliveryError):
                raise result
            classify_push(result, utcnow())
        except DeliveryError as exc:
            raise ApiProblem(
                502,
                "verification not accepted",
                f"the stream's endpoint did not accept the verification SET: {exc}",
            ) from None


def _required_id(stream_id: str | None) -> str:
    if stream_id is None:
        raise InputError([Problem("body", "stream_id", "required: the stream to change")])
    return stream_id
