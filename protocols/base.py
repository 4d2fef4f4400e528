"""The protocol-handler interface: sans-IO, one base class with documented hooks.

A handler builds what to send (or what to show the browser) and reads the answer; the
worker owns the HTTP client, retries, persistence and logging. A new protocol is one
package under ``protocols/`` plus one entry point in the ``logout_orchestrator.protocols``
group whose value is a :class:`ProtocolHandler` subclass.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Generic
from urllib.parse import parse_qsl

from pydantic import BaseModel, ConfigDict, ValidationError
from typing_extensions import TypeVar

from protocols.keyfiles import KeyDirectory
from schemas.errors import PermanentDeliveryError, Problem, TransientDeliveryError

__all__ = [
    "CONTRACT_VERSION",
    "TRANSIENT_STATUS_CODES",
    "BackchannelRequest",
    "BackchannelResponse",
    "Channel",
    "FrontchannelAnswer",
    "FrontchannelEntry",
    "HostInfo",
    "LogoutContext",
    "NoSettings",
    "OpaqueIdentifiers",
    "ProtocolHandler",
    "ProviderInfo",
    "ProviderSessionInfo",
    "classify_status",
    "parse_retry_after",
]

#: The version of this contract, ``major.minor``: a handler built for another major is refused
#: when it loads; a new minor only adds hooks with defaults.
CONTRACT_VERSION = "2.1"

#: HTTP statuses that mean "try again later" (OIDC Back-Channel Logout §2.5 and §2.8).
TRANSIENT_STATUS_CODES = frozenset({408, 425, 429, 502, 503, 504})


class NoSettings(BaseModel):
    """The settings of a handler that has none: its ``[protocols.<name>]`` section must be
    empty."""

    model_config = ConfigDict(extra="forbid", frozen=True)


#: A handler's own settings model (``[protocols.<name>]``, ``LOGOUT_<NAME>_<FIELD>``); a bare
#: ``ProtocolHandler`` (any handler, as the host holds them) has ``BaseModel`` settings.
S_co = TypeVar("S_co", bound=BaseModel, default=BaseModel, covariant=True)


@dataclass(frozen=True, slots=True)
class HostInfo:
    """What a handler may know of the host: the IdP's ``issuer``, the directory where
    generated key material is kept (``data_dir``), and the most bytes of an answer it reads
    (``response_body_limit``; a :class:`BackchannelResponse` is cut there)."""

    issuer: str
    data_dir: Path
    response_body_limit: int = 64 * 1024


class Channel(StrEnum):
    """How a provider session is logged out."""

    BACKCHANNEL = "backchannel"
    FRONTCHANNEL_IFRAME = "frontchannel_iframe"
    FRONTCHANNEL_NATIVE = "frontchannel_native"


@dataclass(frozen=True, slots=True)
class ProviderInfo:
    """A provider as configured; ``settings`` is what the handler's validation returned."""

    name: str
    protocol: str
    enabled: bool
    full_logout_on_rp_initiated: bool
    settings: Any


@dataclass(frozen=True, slots=True)
class ProviderSessionInfo:
    """One provider session; ``identifiers`` are its protocol's, echoed exactly as issued
    and stored as the handler accepted them (opaque to the host: the handler reads them with
    its :attr:`ProtocolHandler.identifier_model`)."""

    id: int
    session_id: str
    user_id: str
    provider: str
    identifiers: Mapping[str, str] = field(default_factory=dict)


class OpaqueIdentifiers(BaseModel):
    """The identifier model of a handler that declares none: any names, text values."""

    model_config = ConfigDict(extra="allow", frozen=True)


@dataclass(frozen=True, slots=True)
class LogoutContext:
    """Why this logout happens and which attempt this is; ``occurred_at`` is when the event
    happened (its ``occurred_at``), None when the host does not know it."""

    event_id: str
    event_type: str
    initiator: str
    delivery_id: str
    attempt: int
    now: datetime
    occurred_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class BackchannelRequest:
    """An HTTP request to send server to server. ``content`` may hold a token: never log it.

    ``reference`` is what the handler needs to match the answer to this request (SAML: the
    request's ``ID``, checked against the response's ``InResponseTo``); never a secret.
    """

    url: str
    content: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    method: str = "POST"
    reference: str | None = None


@dataclass(frozen=True, slots=True)
class FrontchannelEntry:
    """What the browser is shown for one provider session: no secrets, everything to render.

    ``binding`` is ``iframe`` (a URL loaded in a hidden frame), ``redirect`` (a top-level
    navigation) or ``post`` (an auto-submitting form to ``url`` with the fields of ``form``,
    named by the protocol).
    """

    provider: str
    protocol: str
    channel: Channel
    binding: str
    url: str
    form: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FrontchannelAnswer:
    """What the browser brought back to the IdP after a native front-channel step.

    ``query`` is the raw query string as received (a Redirect-binding signature covers its
    exact bytes); ``form`` holds the fields of a POST. It may carry a protocol message:
    never log it.
    """

    method: str
    query: str
    form: Mapping[str, str] = field(default_factory=dict)

    @property
    def params(self) -> dict[str, str]:
        """The query's parameters, decoded (the last of a repeated one)."""
        return dict(parse_qsl(self.query, keep_blank_values=True))

    def field(self, name: str) -> str | None:
        """``name`` from the POST form, or from the query of a GET."""
        return self.form.get(name) if self.method == "POST" else self.params.get(name)


@dataclass(frozen=True, slots=True)
class BackchannelResponse:
    """What came back; ``content`` is capped at the configured body limit."""

    status_code: int
    headers: Mapping[str, str]
    content: bytes


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date), or None.

    A date without a usable zone is read as UTC; anything unreadable is ignored.
    """
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def classify_status(response: BackchannelResponse, now: datetime) -> None:
    """Raise unless the status means success (200 or 204).

    429, 408, 425, 502, 503, 504 are transient (``Retry-After`` honoured); every other
    status, 400 and 501 included, is permanent. Redirects are never followed, so a 3xx is
    permanent too.
    """
    status = response.status_code
    if status in (200, 204):
        return
    if status in TRANSIENT_STATUS_CODES:
        retry_after = parse_retry_after(response.headers.get("retry-after"), now)
        raise TransientDeliveryError(f"HTTP {status}", status_code=status, retry_after=retry_after)
    raise PermanentDeliveryError(f"HTTP {status}", status_code=status)


class ProtocolHandler(Generic[S_co]):
    """Base class of every protocol handler. Override the hooks your protocol needs.

    ``S`` is the handler's own settings model (:attr:`settings_model`, a frozen pydantic
    model): the host reads it from the ``[protocols.<protocol>]`` section of the settings
    file and the ``LOGOUT_<PROTOCOL>_<FIELD>`` variables, validates it and hands it over with
    the :class:`HostInfo`. One instance is made per worker process; it must be safe to call
    from several threads.
    """

    #: The protocol name providers use in their ``protocol`` field.
    protocol: ClassVar[str] = ""
    #: The :data:`CONTRACT_VERSION` the handler was built for; declare it (a literal), so a
    #: host of another major refuses the handler at load instead of misusing it.
    contract_version: ClassVar[str] = CONTRACT_VERSION
    #: The model of ``S``: what ``[protocols.<protocol>]`` may hold.
    settings_model: ClassVar[type[BaseModel]] = NoSettings
    #: The identifiers of this protocol's provider sessions (OIDC: ``sid``, ``sub``; SAML:
    #: ``name_id`` ...): what an import or ``record_provider_session`` may give, checked
    #: with this model (unknown names refused) and stored as given.
    identifier_model: ClassVar[type[BaseModel]] = OpaqueIdentifiers

    def __init__(self, settings: S_co, host: HostInfo) -> None:
        self.settings = settings
        self.host = host

    def start(self) -> None:
        """Load (or generate) what the handler needs before any request: keys, certificates.

        The host calls it at start-up, before the handler builds any request (it may call it
        again: a second call changes nothing); nothing is read from or written to files on
        the request path. Raise
        :class:`~schemas.errors.ConfigurationError` naming the setting to fix. The default:
        nothing.
        """

    def key_directories(self) -> list[KeyDirectory]:
        """Directories this handler will write to when it first signs (generated keys).

        Commands that deliver (``worker``, ``publish`` on ``memory://``) check at start that
        each is writable, so a read-only data directory is a configuration error at once,
        not a failed logout later. The default: none.
        """
        return []

    def validate_settings(self, provider: str, settings: Mapping[str, Any]) -> Any:
        """Check a provider's protocol settings; return the parsed form.

        Raise :class:`orchestrator.errors.InputError` naming the provider and field.
        The default accepts the mapping as it is.
        """
        return dict(settings)

    def stored_settings(self, provider: str, settings: Mapping[str, Any]) -> Any:
        """Parse a provider's settings as :meth:`validate_settings` returned them and the host
        stored them (JSON), when a logout needs them: no file is read here (the request path).

        Raise :class:`~schemas.errors.InputError` when they no longer pass. The default:
        :meth:`validate_settings`.
        """
        return self.validate_settings(provider, settings)

    def outgoing_urls(self, settings: Any) -> dict[str, str]:
        """The URLs of a provider the worker itself sends to, by field name, from
        ``settings`` as :meth:`validate_settings` returned them.

        ``providers load`` checks them against the egress policy (``egress_allow``); a
        URL only the browser loads (front-channel) is not one of them. The default: none
        (the check when a request is sent still applies).
        """
        return {}

    def identifier_problems(
        self, provider: ProviderInfo, identifiers: Mapping[str, str]
    ) -> list[Problem]:
        """What the host calls: ``identifiers`` checked with :attr:`identifier_model` (one
        :class:`Problem` per refused field), then by :meth:`validate_provider_session`."""
        try:
            parsed = self.identifier_model.model_validate(dict(identifiers))
        except ValidationError as exc:
            known = ", ".join(self.identifier_model.model_fields) or "any"
            return [
                Problem(
                    "",
                    ".".join(str(part) for part in error["loc"]),
                    f"is not an identifier of protocol {self.protocol!r} (provider "
                    f"{provider.name!r} takes: {known})"
                    if error["type"] == "extra_forbidden"
                    else error["msg"].removeprefix("Value error, "),
                )
                for error in exc.errors()
            ]
        return self.validate_provider_session(provider, parsed)

    def validate_provider_session(self, provider: ProviderInfo, identifiers: Any) -> list[Problem]:
        """Check the identifiers of a provider session about to be recorded for ``provider``
        (its ``settings`` as :meth:`validate_settings` returned them); ``identifiers`` is an
        instance of :attr:`identifier_model`.

        Return one :class:`Problem` per field that cannot work, its ``message`` saying what
        to give instead (``where`` is left empty: the caller names the line or record);
        nothing is recorded then. Called on ``sessions import`` and
        ``record_provider_session``. The default accepts any identifiers.
        """
        return []

    def channel(self, provider: ProviderInfo) -> Channel:
        """How this provider's sessions are logged out. Default: back-channel."""
        return Channel.BACKCHANNEL

    def skip_reason(self, provider: ProviderInfo) -> str | None:
        """Why the provider is not to be sent anything now, as a disabled provider is not
        (its deliveries are recorded ``skipped`` with this reason, not failed, so neither a
        roll-up says ``partial`` nor ``deliveries retry --failed`` takes them up); None when
        it is. Default: None."""
        return None

    def backchannel_request(
        self, provider: ProviderInfo, session: ProviderSessionInfo, context: LogoutContext
    ) -> BackchannelRequest:
        """Build the request for one attempt (fresh identifiers every time)."""
        raise NotImplementedError(f"{type(self).__name__} has no back-channel logout")

    def frontchannel_entry(
        self, provider: ProviderInfo, session: ProviderSessionInfo, context: LogoutContext
    ) -> FrontchannelEntry:
        """What the browser must load to log this provider session out (front-channel)."""
        raise NotImplementedError(f"{type(self).__name__} has no front-channel logout")

    def interpret_response(
        self,
        provider: ProviderInfo,
        session: ProviderSessionInfo,
        request: BackchannelRequest,
        response: BackchannelResponse,
        context: LogoutContext,
    ) -> None:
        """Return when the logout succeeded; raise a Permanent/TransientDeliveryError if not.

        The default applies :func:`classify_status`.
        """
        classify_status(response, context.now)

    def answered_delivery(self, answer: FrontchannelAnswer) -> str | None:
        """Which delivery (``LogoutContext.delivery_id``) the browser's ``answer``, brought
        back to the host's return URL after a native step, answers; None when it is no
        answer of this protocol. The host then finds the plan entry and asks
        :meth:`frontchannel_answer` for the outcome. The default: None."""
        return None

    def frontchannel_answer(
        self, provider: ProviderInfo, sent: FrontchannelEntry, answer: FrontchannelAnswer
    ) -> None:
        """Check what the browser brought back after the native step ``sent``.

        Return when it confirms the logout; raise :class:`PermanentDeliveryError` saying
        why not (never quoting the message).
        """
        raise NotImplementedError(f"{type(self).__name__} reads no front-channel answers")
