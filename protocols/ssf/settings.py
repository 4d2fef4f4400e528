"""A receiver's stream as a provider, the handler's own settings and the identifiers of a
stream's provider sessions, validated when providers are loaded or a stream registers."""

from __future__ import annotations

import os
import re
from datetime import datetime
from enum import StrEnum
from typing import Any, Final, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from protocols.oidc.signing import SigningSettings
from protocols.validation import check_uri, input_error, text_list, uri_form
from schemas.durations import WholeSeconds
from schemas.errors import PermanentDeliveryError

__all__ = [
    "CAEP_EVENT_TYPE",
    "SESSION_REVOKED",
    "SUPPORTED_EVENTS",
    "VERIFICATION",
    "SsfIdentifiers",
    "SsfSettings",
    "StreamSettings",
    "StreamStatus",
    "SubjectFormat",
    "parse_stream_settings",
]

#: The prefix of every CAEP 1.0 event type URI.
CAEP_EVENT_TYPE: Final = "https://schemas.openid.net/secevent/caep/event-type/"
#: CAEP 1.0 §3.1: the one event this transmitter emits for an ended session.
SESSION_REVOKED: Final = CAEP_EVENT_TYPE + "session-revoked"
#: SSF 1.0 §8.1.4: the verification event a receiver asks for.
VERIFICATION: Final = "https://schemas.openid.net/secevent/ssf/event-type/verification"
#: What this transmitter sends (``events_supported``); a stream may request others, and gets
#: the intersection (``events_delivered``).
SUPPORTED_EVENTS: Final = (SESSION_REVOKED, VERIFICATION)
#: How many event types a stream may request.
_MAX_REQUESTED: Final = 64
#: The name of an environment variable an ``authorization_env`` may give.
_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


class SubjectFormat(StrEnum):
    """RFC 9493 subject identifier formats a stream may ask for in ``sub_id``."""

    ISS_SUB = "iss_sub"
    EMAIL = "email"
    OPAQUE = "opaque"
    COMPLEX = "complex"


class StreamStatus(StrEnum):
    """SSF 1.0 §8.1.2 stream status: only an enabled stream is sent SETs; a paused or
    disabled one's events are not held (this transmitter keeps no backlog)."""

    ENABLED = "enabled"
    PAUSED = "paused"
    DISABLED = "disabled"


class SsfSettings(SigningSettings):
    """The SSF handler's own settings: ``[protocols.ssf]``, ``LOGOUT_SSF_<FIELD>``.

    SETs are signed with the logout-token keys: with ``key_files`` and ``active_kid`` both
    unset here, the host gives those of ``[protocols.oidc]`` (or, with none there either,
    the keys generated into ``<data_dir>/oidc-keys``).
    """

    default_subjects: Literal["ALL", "NONE"] = Field(
        default="NONE",
        description="what a stream registered over HTTP hears of before it adds subjects: "
        "every user's sessions (ALL) or none (NONE)",
    )
    stream_allow_http: bool = Field(
        default=False,
        description="let streams registered over HTTP push to http:// endpoints (development)",
    )
    subject_tokens: list[str] | None = Field(
        default=None,
        description="the API tokens (names) whose streams may add subjects and get "
        "default_subjects = ALL; unset: every token with scope ssf:streams",
    )
    min_verification_interval: WholeSeconds = Field(
        default=30,
        ge=1,
        le=86_400,
        description="the shortest time between two verification SETs a receiver asks for, "
        "per stream (SSF 1.0 §8.1.1); sooner is a 429 with Retry-After",
    )

    def may_add_subjects(self, token: str) -> bool:
        """Whether the stream of API token ``token`` may add subjects (or hear of every
        user): any token unless ``subject_tokens`` names some."""
        return self.subject_tokens is None or token in self.subject_tokens

    _token_list = field_validator("subject_tokens", mode="before")(text_list)


class StreamSettings(BaseModel):
    """A receiver's stream (SSF 1.0 §8.1.1): where SETs are pushed (RFC 8935), how they are
    addressed and the subject identifier format it wants."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoint_url: str = Field(description="the receiver's push endpoint (RFC 8935)")
    aud: str = Field(min_length=1, max_length=2048, description="the SETs' audience")
    authorization: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        repr=False,
        description="the Authorization header value sent with each SET (a secret)",
    )
    authorization_env: str | None = Field(
        default=None,
        description="the environment variable of the worker that holds the header value",
    )
    events_requested: list[str] = Field(default_factory=lambda: [SESSION_REVOKED])
    subject_format: SubjectFormat = SubjectFormat.ISS_SUB
    status: StreamStatus = StreamStatus.ENABLED
    description: str | None = Field(default=None, max_length=512)
    allow_http: bool = False
    owner: str | None = Field(
        default=None,
        max_length=64,
        description="the API token (its name) that registered the stream over HTTP and alone "
        "sees and changes it; none for a stream of the providers file",
    )
    status_reason: str | None = Field(default=None, max_length=512)
    verification_requested_at: datetime | None = Field(
        default=None,
        description="when the receiver last asked for a verification SET (its interval)",
    )

    _uri_form = field_validator("endpoint_url")(uri_form)

    @field_validator("events_requested")
    @classmethod
    def _event_uris(cls, value: list[str]) -> list[str]:
        """Any event type URI may be requested (SSF 1.0 §8.1.1: the transmitter delivers
        the intersection with what it supports, :attr:`events_delivered`); kept as asked,
        without repeats."""
        if len(value) > _MAX_REQUESTED:
            raise ValueError(f"at most {_MAX_REQUESTED} event types")
        for event in value:
            if not 0 < len(event) <= 2048 or event != event.strip():
                raise ValueError(f"{event[:64]!r} is not an event type URI")
        return list(dict.fromkeys(value))

    @property
    def events_delivered(self) -> list[str]:
        """What the stream gets: the events it requested that this transmitter sends."""
        return [event for event in self.events_requested if event in SUPPORTED_EVENTS]

    @field_validator("authorization_env")
    @classmethod
    def _variable_name(cls, value: str | None) -> str | None:
        if value is not None and not _VARIABLE.match(value):
            raise ValueError("must be an environment variable name (letters, digits, _)")
        return value

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        check_uri("endpoint_url", self.endpoint_url, self.allow_http)
        if self.authorization is not None and self.authorization_env is not None:
            raise ValueError("authorization_env: give authorization or authorization_env, not both")
        return self

    def not_delivering(self) -> str | None:
        """Why the stream gets no ``session-revoked`` SET now (None: it does): it is paused or
        disabled, did not request the event, or its ``authorization_env`` is unset in this
        worker (naming the variable, never a value)."""
        if self.status is not StreamStatus.ENABLED:
            return f"the stream is {self.status.value}: no SET sent (its events are not held)"
        if SESSION_REVOKED not in self.events_delivered:
            return "the stream did not request session-revoked: no SET sent"
        if self.authorization_env is not None and not os.environ.get(self.authorization_env):
            return (
                f"authorization_env names {self.authorization_env}, which is not set in the "
                "worker's environment: no SET sent; set it, or give authorization"
            )
        return None

    def authorization_header(self) -> str | None:
        """The Authorization header value: the literal, or the worker's variable.

        A named variable that is unset fails the request, naming the variable (never a
        value); deliveries are skipped before that (:meth:`not_delivering`)."""
        if self.authorization_env is None:
            return self.authorization
        value = os.environ.get(self.authorization_env)
        if not value:
            raise PermanentDeliveryError(
                f"authorization_env names {self.authorization_env}, which is not set in the "
                "worker's environment; set it, or give authorization"
            )
        return value


class SsfIdentifiers(BaseModel):
    """What a stream's provider session may carry to override the subject: the user's
    ``sub`` at the stream (default: the user id), their ``email`` (required by the ``email``
    format unless the user id is one) and the session's id there (``sid``, default: the IdP
    session id, used by the ``complex`` format)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sub: str | None = Field(default=None, min_length=1, max_length=255)
    email: str | None = Field(default=None, min_length=3, max_length=320, pattern=r"^[^@\s]+@\S+$")
    sid: str | None = Field(default=None, min_length=1, max_length=255)


def parse_stream_settings(provider: str, settings: Any) -> StreamSettings:
    """Validate ``settings``; raise :class:`InputError` naming the provider and field."""
    try:
        return StreamSettings.model_validate(settings)
    except ValidationError as exc:
        raise input_error(exc, provider, StreamSettings) from exc
