"""SSF streams registered over HTTP (SSF 1.0 §8.1): each is a provider of protocol ``ssf``,
written through the registry (so checked like one of the providers file, egress policy
included) and owned by the API token that created it. A receiver sees and changes only its
own streams; another's is "not found", so none learns what others registered.

A deleted stream's provider is kept, disabled and without an owner: its past deliveries
keep naming it. Its subscriptions go at once.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.problems import ApiProblem
from api.ssf_stream_changes import (
    PREFIX,
    Change,
    check_interval,
    described,
    not_found,
    receiver_problem,
    required_id,
    stored_problem,
)
from api.ssf_stream_requests import (
    Delivery,
    StatusUpdate,
    StreamRequest,
    SubjectRequest,
    VerifyRequest,
)
from orchestrator.audit import emit, write_audit
from orchestrator.registry import write_providers
from orchestrator.runtime import Runtime
from orchestrator.store import Provider, utcnow
from orchestrator.subscriptions import EVERY_USER, subscribe, subscribers, unsubscribe
from orchestrator.trail import ssf_stream_changed
from protocols.ssf import (
    PUSH_DELIVERY,
    SUPPORTED_EVENTS,
    SsfHandler,
    StreamSettings,
    StreamStatus,
    classify_push,
)
from schemas import AuditType
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

STREAM_CREATED: Final = AuditType.SSF_STREAM_CREATED
STREAM_UPDATED: Final = AuditType.SSF_STREAM_UPDATED
STREAM_DELETED: Final = AuditType.SSF_STREAM_DELETED
SUBJECT_ADDED: Final = AuditType.SSF_SUBJECT_ADDED
SUBJECT_REMOVED: Final = AuditType.SSF_SUBJECT_REMOVED

_log = structlog.get_logger("logout.api")


class Streams:
    """Stream configurations on the runtime's database, for the holder ``owner``.

    Each change reads the stream's provider row locked (``FOR UPDATE``) and writes it in the
    same transaction, with its audit record: a change racing a delete cannot bring the
    stream back, and the operator's ``enabled`` (``providers disable``) is kept as found.
    """

    def __init__(self, runtime: Runtime, handler: SsfHandler) -> None:
        self._runtime = runtime
        self._handler = handler

    # -- reading ----------------------------------------------------------------------

    def _owned(self, row: Provider | None, owner: str, stream_id: str) -> StreamSettings:
        if row is None or row.protocol != "ssf" or row.settings.get("owner") != owner:
            raise not_found(stream_id)
        try:
            settings = self._handler.stored_settings(row.name, row.settings)
        except InputError as exc:
            raise stored_problem(stream_id, exc) from None
        if not isinstance(settings, StreamSettings):
            raise not_found(stream_id)
        return settings

    def _row(self, owner: str, stream_id: str) -> StreamSettings:
        with self._runtime.database() as db:
            return self._owned(db.get(Provider, PREFIX + stream_id), owner, stream_id)

    def read(self, owner: str, stream_id: str) -> dict[str, Any]:
        return self.configuration(stream_id, self._row(owner, stream_id))

    def listing(self, owner: str) -> list[dict[str, Any]]:
        """The holder's streams; one whose stored settings no longer pass is left out (and
        logged, naming it), not the whole listing refused: reading it names the problem."""
        with self._runtime.database() as db:
            rows = db.scalars(
                select(Provider)
                .where(Provider.protocol == "ssf", Provider.name.startswith(PREFIX))
                .order_by(Provider.name)
            ).all()
        found = []
        for row in rows:
            if row.settings.get("owner") != owner:
                continue
            stream_id = row.name.removeprefix(PREFIX)
            try:
                found.append(self.configuration(stream_id, self._owned(row, owner, stream_id)))
            except ApiProblem as exc:
                _log.warning("stream left out of listing", stream=stream_id, problem=exc.title)
        return found

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
            "min_verification_interval": self._handler.settings.min_verification_interval,
        }

    def status(self, owner: str, stream_id: str) -> dict[str, Any]:
        stream = self._row(owner, stream_id)
        answer: dict[str, Any] = {"stream_id": stream_id, "status": stream.status.value}
        if stream.status_reason:
            answer["reason"] = stream.status_reason
        return answer

    # -- writing ----------------------------------------------------------------------

    @contextmanager
    def _changing(self, owner: str, stream_id: str) -> Iterator[Change]:
        """The holder's stream, its provider row locked until the change commits; the
        audit records the change collects are written last and logged after the commit."""
        with self._runtime.database.begin() as db:
            row = db.scalars(
                select(Provider).where(Provider.name == PREFIX + stream_id).with_for_update()
            ).one_or_none()
            change = Change(db, owner, stream_id, row, self._owned(row, owner, stream_id))
            yield change
            records = write_audit(db, change.audit)  # last
        emit(records)

    def _store(
        self, db: Session, stream_id: str, settings: Mapping[str, Any], *, enabled: bool
    ) -> None:
        """Write the stream's provider through the registry's checks (the providers file's,
        egress policy included) in the caller's transaction. A problem with what the
        receiver sent names its field in the body; any other names the stream."""
        config = ProviderConfig.model_validate(
            {"name": PREFIX + stream_id, "protocol": "ssf", "enabled": enabled, **settings}
        )
        try:
            checked = self._runtime.registry.check_configs([config])
        except InputError as exc:
            raise InputError([receiver_problem(stream_id, p) for p in exc.problems]) from None
        write_providers(db, checked)

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
        every_user = self._handler.settings.default_subjects == "ALL"
        every_user = every_user and self._handler.settings.may_add_subjects(owner)
        with self._runtime.database.begin() as db:
            self._store(db, stream_id, settings, enabled=True)
            if every_user:
                subscribe(db, PREFIX + stream_id, EVERY_USER, utcnow())
            detail = {**described(settings), "every_user": every_user}
            entry = ssf_stream_changed(STREAM_CREATED, PREFIX + stream_id, owner, detail)
            records = write_audit(db, [entry])  # last
        emit(records)
        return self.read(owner, stream_id)

    def update(self, owner: str, body: StreamRequest, *, replace: bool) -> dict[str, Any]:
        stream_id = required_id(body.stream_id)
        with self._changing(owner, stream_id) as change:
            current = change.settings
            if replace:
                if body.delivery is None:
                    raise InputError([Problem("body", "delivery", "required: the push endpoint")])
                kept = current.model_dump(
                    mode="json", include={"status", "status_reason", "verification_requested_at"}
                )
                base = {**kept, "aud": body.aud or body.delivery.endpoint_url}
            else:
                base = current.model_dump(mode="json", exclude={"owner", "allow_http"})
            settings = self._settings(owner, body, base)
            self._store(change.db, stream_id, settings, enabled=change.enabled)
            change.record(STREAM_UPDATED, {**described(settings), "replaced": replace})
        return self.read(owner, stream_id)

    def set_status(self, owner: str, body: StatusUpdate) -> dict[str, Any]:
        with self._changing(owner, body.stream_id) as change:
            settings = change.settings.model_dump(mode="json")
            settings.update(status=body.status.value, status_reason=body.reason)
            self._store(change.db, body.stream_id, settings, enabled=change.enabled)
            change.record(STREAM_UPDATED, {"status": body.status.value, "reason": body.reason})
        return self.status(owner, body.stream_id)

    def delete(self, owner: str, stream_id: str) -> None:
        with self._changing(owner, stream_id) as change:
            settings = change.settings.model_dump(mode="json")
            settings.update(status="disabled", owner=None)
            self._store(change.db, stream_id, settings, enabled=False)
            provider = PREFIX + stream_id
            subjects = subscribers(change.db, provider)
            for user_id in subjects:
                unsubscribe(change.db, provider, user_id)
            change.record(STREAM_DELETED, {"subjects_removed": len(subjects)})

    def subject(self, owner: str, body: SubjectRequest, *, add: bool) -> None:
        """Subscribe the stream to the subject's user (or end that); ``add`` or remove.
        Adding is refused (403) to a token ``subject_tokens`` does not name."""
        if add and not self._handler.settings.may_add_subjects(owner):
            raise ApiProblem(
                403,
                "adding subjects not allowed",
                f"token {owner!r} is not in subject_tokens of [protocols.ssf]; an operator "
                "decides which receivers may hear of which users",
            )
        user_id = self._user(body.subject)
        with self._changing(owner, body.stream_id) as change:
            provider = PREFIX + body.stream_id
            if add:
                subscribe(change.db, provider, user_id, utcnow())
            else:
                unsubscribe(change.db, provider, user_id)
            change.record(SUBJECT_ADDED if add else SUBJECT_REMOVED, {}, user_id)

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
        """Push the verification SET with ``state`` to the stream (SSF 1.0 §8.1.4.2), at
        most once per ``min_verification_interval`` (else 429 with ``Retry-After``)."""
        now = utcnow()
        with self._changing(owner, body.stream_id) as change:
            stream = change.settings
            if stream.status is StreamStatus.DISABLED:
                raise ApiProblem(409, "stream disabled", "enable the stream before verifying it")
            check_interval(stream, self._handler.settings.min_verification_interval, now)
            change.stamp_verification(now)
        request = self._handler.verification_request(body.stream_id, stream, body.state, now)
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
