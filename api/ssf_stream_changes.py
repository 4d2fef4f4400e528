"""One change of a receiver's stream under its row lock, what its audit record says, and
the problems a change meets, each naming the field the receiver sent or the stream."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from sqlalchemy.orm import Session

from api.problems import ApiProblem
from orchestrator.audit import AuditEntry
from orchestrator.settings_environment import redact_url
from orchestrator.store import Provider
from orchestrator.trail import ssf_stream_changed
from protocols.ssf import StreamSettings, SubjectFormat
from schemas import AuditType
from schemas.errors import InputError, Problem

__all__ = [
    "PREFIX",
    "Change",
    "check_interval",
    "described",
    "not_found",
    "receiver_problem",
    "required_id",
    "stored_problem",
]

#: The provider name of stream ``<id>`` is ``ssf-<id>``.
PREFIX: Final = "ssf-"
#: Stream settings the receiver sets, by the name it sends them under.
_FIELDS: Final[Mapping[str, str]] = {
    "endpoint_url": "delivery.endpoint_url",
    "authorization": "delivery.authorization_header",
    "subject_format": "format",
    "status_reason": "reason",
}
#: Stream settings the receiver sends under their own name.
_BODY_FIELDS: Final = frozenset({"aud", "events_requested", "description", "status"})


def not_found(stream_id: str) -> ApiProblem:
    return ApiProblem(
        404,
        "no such stream",
        f"stream {stream_id!r} is not one of this token's streams; list them with "
        "GET /v1/ssf/stream",
    )


def stored_problem(stream_id: str, exc: InputError) -> ApiProblem:
    """A stream whose stored settings no longer pass (an operator's edit, a release that
    checks more): named, with the fix; not the receiver's input."""
    return ApiProblem(
        409,
        "stream settings no longer valid",
        f"stream {stream_id!r} is stored with settings this release refuses; an operator "
        "must correct its provider (providers load) or remove it (providers remove)",
        [Problem(f"stream {stream_id!r}", p.field, p.message) for p in exc.problems],
    )


def check_interval(stream: StreamSettings, interval: int, now: datetime) -> None:
    """429 with ``Retry-After`` when the stream's last verification was under ``interval``
    seconds ago: any holder of ``ssf:streams`` could otherwise have SETs pushed at will."""
    last = stream.verification_requested_at
    if last is None:
        return
    wait = math.ceil(interval - (now - last).total_seconds())
    if wait > 0:
        raise ApiProblem(
            429,
            "verification requested too soon",
            f"this stream was verified less than min_verification_interval ({interval} s) "
            f"ago; ask again in {wait} s",
            headers={"Retry-After": str(wait)},
        )


def required_id(stream_id: str | None) -> str:
    if stream_id is None:
        raise InputError([Problem("body", "stream_id", "required: the stream to change")])
    return stream_id


class Change:
    """One change of a stream under its row lock: the transaction, the stream as found, and
    the audit records to write."""

    def __init__(
        self,
        db: Session,
        actor: str,
        stream_id: str,
        row: Provider | None,
        settings: StreamSettings,
    ) -> None:
        self.db = db
        self.actor = actor
        self.stream_id = stream_id
        self.row = row
        self.enabled = bool(row is not None and row.enabled)
        self.settings = settings
        self.audit: list[AuditEntry] = []

    def stamp_verification(self, when: datetime) -> None:
        """Keep when a verification was asked for (stream state, as its status is)."""
        assert self.row is not None  # an owned stream has its row
        self.row.settings = {**self.row.settings, "verification_requested_at": when.isoformat()}

    def record(self, kind: AuditType, detail: Mapping[str, Any], user: str | None = None) -> None:
        provider = PREFIX + self.stream_id
        self.audit.append(ssf_stream_changed(kind, provider, self.actor, detail, user))


def described(settings: Mapping[str, Any]) -> dict[str, Any]:
    """What an audit record says of a stream's settings: never the authorization header."""
    return {
        "endpoint_url": redact_url(str(settings.get("endpoint_url", ""))),
        "aud": settings.get("aud"),
        "events_requested": settings.get("events_requested"),
        "format": str(settings.get("subject_format") or SubjectFormat.ISS_SUB.value),
        "authorization_header": bool(settings.get("authorization")),
    }


def receiver_problem(stream_id: str, problem: Problem) -> Problem:
    """A registry problem as the receiver sees it: a field it sent, under its name in the
    body; another (stored by this service) names the stream."""
    if problem.field in _FIELDS or problem.field in _BODY_FIELDS:
        return Problem("body", _FIELDS.get(problem.field, problem.field), problem.message)
    return Problem(f"stream {stream_id!r}", problem.field, problem.message)
