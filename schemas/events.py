"""Event contract: what IdP components publish.

Every event carries ``type``, ``event_id`` (the idempotency key), ``occurred_at``, ``initiator``
and optionally ``actor`` and ``request``. Fields may be added to these models, never renamed.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    TypeAdapter,
    field_serializer,
    model_validator,
)

from schemas.fields import (
    AsNumber,
    EventId,
    Expiry,
    GeoCode,
    Identifier,
    Latitude,
    Longitude,
    Method,
    Name,
    RelayState,
    RequestArgs,
    Sha256Hex,
    ShortName,
    Timestamp,
    UrlPath,
    UserAgent,
)
from schemas.registry import GeoipBindingMode, IpText, NetworkBindingMode

__all__ = [
    "ACTIVITY_EVENT_TYPES",
    "ASN",
    "BINDING_REASONS",
    "EVENT_TYPES",
    "Binding",
    "BindingReason",
    "Event",
    "EventBase",
    "Geo",
    "GeoipBindingChange",
    "GeoipBindingReason",
    "HttpRequest",
    "Initiator",
    "IpChange",
    "LogoutProvider",
    "LogoutUser",
    "NetworkBindingChange",
    "NetworkBindingReason",
    "RequestInfo",
    "SessionBindingViolation",
    "SessionExpired",
    "SessionRevoke",
    "SessionSeen",
    "SessionStarted",
    "SessionTerminateOthers",
    "UserRevokeAll",
    "device_hash",
    "event_adapter",
]

Initiator = Literal["user", "admin", "policy", "system"]
NetworkBindingReason = Literal[
    "network.missing",
    "network.asn",
    "network.asn_network",
    "network.ip",
]
GeoipBindingReason = Literal[
    "geoip.missing",
    "geoip.continent",
    "geoip.country",
    "geoip.city",
]
BindingReason = Literal[NetworkBindingReason, GeoipBindingReason]
BINDING_REASONS: tuple[str, ...] = BindingReason.__args__  # type: ignore[attr-defined]


class _Contract(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RequestInfo(_Contract):
    """The HTTP request that caused the event, as the IdP saw it."""

    ip: IpText = None
    user_agent: UserAgent | None = None
    path: UrlPath | None = None
    method: Method | None = None
    args: RequestArgs = Field(default_factory=dict)


def _require_type(schema: dict[str, Any]) -> None:
    """Publishers must always send ``type``: it picks the event's shape."""
    required = schema.setdefault("required", [])
    if "type" in schema.get("properties", {}) and "type" not in required:
        required.insert(0, "type")


class EventBase(_Contract):
    """Fields every event carries."""

    model_config = ConfigDict(json_schema_extra=_require_type)

    event_id: EventId = Field(description="Idempotency key: the same event_id is handled once.")
    occurred_at: Timestamp = Field(description="RFC 3339 timestamp with a UTC offset.")
    initiator: Initiator
    actor: Name | None = Field(default=None, description="Who caused it, e.g. an admin's id.")
    request: RequestInfo | None = None


class LogoutUser(EventBase):
    """The user logs out of the IdP: the session and all its provider sessions end."""

    type: Literal["logout.user"] = "logout.user"
    session_id: Identifier
    plan_id: Identifier | None = Field(
        default=None, description="Set when the IdP waits for a front-channel stage plan."
    )


class LogoutProvider(EventBase):
    """An application started the logout."""

    type: Literal["logout.provider"] = "logout.provider"
    session_id: Identifier
    provider: Identifier
    full_logout: bool = Field(
        default=False, description="End the IdP session and every provider session too."
    )
    provider_only: bool = Field(
        default=False,
        description="End this provider's session only, even when the provider has "
        "full_logout_on_rp_initiated (an operator logging one provider out).",
    )
    plan_id: Identifier | None = Field(
        default=None, description="Set when the IdP waits for a front-channel stage plan."
    )
    in_response_to: Identifier | None = Field(
        default=None,
        description="SAML: the ID of the SP's LogoutRequest; the plan ends with the IdP's "
        "LogoutResponse to it.",
    )

    @model_validator(mode="after")
    def _one_scope(self) -> Self:
        if self.full_logout and self.provider_only:
            raise ValueError("full_logout and provider_only contradict each other; give one")
        return self

    relay_state: RelayState | None = Field(
        default=None, description="SAML: the SP's RelayState, returned as is."
    )


class SessionRevoke(EventBase):
    """An admin (or a policy, such as the per-user session limit) ends one session."""

    type: Literal["session.revoke"] = "session.revoke"
    session_id: Identifier
    reason: Name | None = Field(default=None, description="Why, for the audit trail (optional).")
    user_id: Identifier | None = Field(
        default=None,
        description=(
            "The user the session must belong to (optional): a session of another user is "
            "not ended (audited as session.not_found, reason 'session of another user')."
        ),
    )


class UserRevokeAll(EventBase):
    """An admin ends every session of a user (also used on deactivation)."""

    type: Literal["user.revoke_all"] = "user.revoke_all"
    user_id: Identifier


class SessionTerminateOthers(EventBase):
    """At login, every other session of the user ends."""

    type: Literal["session.terminate_others"] = "session.terminate_others"
    user_id: Identifier
    keep_session_id: Identifier


class SessionExpired(EventBase):
    """The session passed its idle or absolute lifetime."""

    type: Literal["session.expired"] = "session.expired"
    session_id: Identifier
    reason: Literal["idle", "absolute"]


class IpChange(_Contract):
    previous: IpText = None
    new: IpText = None


class ASN(_Contract):
    """An ASN database record: the autonomous system, its organisation and the network (CIDR)."""

    asn: AsNumber | None = None
    as_org: Name | None = None
    network: ShortName | None = None


class Geo(_Contract):
    """A GeoIP City record: continent code, country ISO code, city (English), location."""

    continent: GeoCode | None = None
    country: GeoCode | None = None
    city: Name | None = None
    lat: Latitude | None = None
    long: Longitude | None = None


#: The seven continent codes of the GeoIP databases (to read a pre-object ``geoip.missing``).
_CONTINENT_CODES = frozenset({"AF", "AN", "AS", "EU", "NA", "OC", "SA"})


def _legacy_asn(value: str | None) -> dict[str, Any]:
    """A value of the string shape (before the records) as the ASN record it came from.

    Its form tells the field: digits are the ASN, a CIDR the network; an address (what
    ``network.ip`` compared) is already in the event's ``ip``, so it gives ``{}``, as does
    ``null`` or anything else.
    """
    if value is None:
        return {}
    text = value.strip()
    if text.isdigit():
        return {"asn": int(text)}
    if "/" in text:
        return {"network": text}
    return {}


_GEO_FIELD: dict[str, str] = {
    "geoip.continent": "continent",
    "geoip.country": "country",
    "geoip.city": "city",
}


def _legacy_geo(reason: object, value: str | None) -> dict[str, Any]:
    """A value of the string shape (before the records) as the GeoIP record it came from.

    The reason names the field; for ``geoip.missing`` (any of the three levels) the form
    does: a continent code is the continent, another two letters the country, else the city.
    """
    if value is None:
        return {}
    name = _GEO_FIELD.get(str(reason))
    if name is None:
        if value in _CONTINENT_CODES:
            name = "continent"
        elif len(value) == 2 and value.isalpha() and value.isupper():
            name = "country"
        else:
            name = "city"
    return {name: value}


class _BindingChange(_Contract):
    """Shared by both binding kinds: a record that found nothing is written ``{}``."""

    @field_serializer("previous_value", "new_value", mode="wrap", check_fields=False)
    def _nothing_found_is_empty(
        self, value: BaseModel, handler: SerializerFunctionWrapHandler
    ) -> dict[str, Any]:
        dumped: dict[str, Any] = handler(value)
        return dumped if any(item is not None for item in dumped.values()) else {}

    @staticmethod
    def _from_string(reason: object, value: str | None) -> dict[str, Any]:
        """A value of the string shape of earlier releases as the record it came from."""
        raise NotImplementedError

    @model_validator(mode="before")
    @classmethod
    def _read_strings(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        return {
            **data,
            **{
                key: cls._from_string(data.get("reason"), data[key])
                for key in ("previous_value", "new_value")
                if key in data and (data[key] is None or isinstance(data[key], str))
            },
        }


class NetworkBindingChange(_BindingChange):
    """A broken network binding: the login's ASN record and the new address's.

    ``previous_value`` is what the session recorded at login (sessions recorded before the
    organisation was kept have ``as_org`` ``null``); ``new_value`` is the ASN database's record
    for the new address. ``{}`` when the lookup found nothing (a private address, one not in
    the database). The string shape of earlier releases (``"15169"``, ``"89.160.0.0/17"``) is
    still read.
    """

    reason: NetworkBindingReason
    previous_value: ASN = Field(default_factory=ASN)
    new_value: ASN = Field(default_factory=ASN)

    @staticmethod
    def _from_string(reason: object, value: str | None) -> dict[str, Any]:
        return _legacy_asn(value)


class GeoipBindingChange(_BindingChange):
    """A broken GeoIP binding: the login's GeoIP record and the new address's.

    ``previous_value`` is what the session recorded at login (sessions recorded before the
    location was kept have ``lat`` and ``long`` ``null``); ``new_value`` is the City database's
    record for the new address. ``{}`` when the lookup found nothing. The string shape of
    earlier releases (``"SE"``, ``"London"``) is still read.
    """

    reason: GeoipBindingReason
    previous_value: Geo = Field(default_factory=Geo)
    new_value: Geo = Field(default_factory=Geo)

    @staticmethod
    def _from_string(reason: object, value: str | None) -> dict[str, Any]:
        return _legacy_geo(reason, value)


Binding = Annotated[NetworkBindingChange | GeoipBindingChange, Field(discriminator="reason")]
"""Which binding broke (the reason names the coarsest change) and the two records compared."""


class HttpRequest(_Contract):
    path: UrlPath | None = None
    method: Method | None = None
    args: RequestArgs = Field(default_factory=dict)
    user_agent: UserAgent | None = None


class SessionBindingViolation(EventBase):
    """The session's network or GeoIP binding broke."""

    type: Literal["session.binding_violation"] = "session.binding_violation"
    session_id: Identifier
    binding: Binding
    ip: IpChange
    asn: ASN = Field(default_factory=ASN)
    geo: Geo = Field(default_factory=Geo)
    http_request: HttpRequest = Field(default_factory=HttpRequest)


class SessionStarted(EventBase):
    """A user logged in: the IdP session exists from now on (not a logout)."""

    type: Literal["session.started"] = "session.started"
    session_id: Identifier
    user_id: Identifier
    ip: IpText = None
    user_agent: UserAgent | None = None
    remember_me: bool = False
    stay_signed_in: bool = False
    network_binding: NetworkBindingMode = "no_binding"
    geoip_binding: GeoipBindingMode = "no_binding"
    expires_at: Expiry | None = Field(
        default=None, description="Default: from the session policy; after occurred_at."
    )
    device_id: Identifier | None = Field(
        default=None,
        description="The device cookie id the IdP holds for this browser, if any: with ip, "
        "it tells whether the login comes from a known device (remember_device). A bearer "
        "secret of the browser: validation replaces it with its device_hash, so the id "
        "itself is never stored, queued or logged (a validated event's device_id is null).",
    )
    device_hash: Sha256Hex | None = Field(
        default=None,
        description="The SHA-256 (hex) of device_id: what a validated event carries instead "
        "of the id. Give device_id, or this when the IdP hashes the id itself.",
    )

    @model_validator(mode="after")
    def _expires_after_start(self) -> Self:
        if self.expires_at is not None and self.expires_at <= self.occurred_at:
            raise ValueError("expires_at: must be after occurred_at (the login)")
        return self

    @model_validator(mode="after")
    def _device_id_hashed(self) -> Self:
        if self.device_id is None:
            return self
        digest = device_hash(self.device_id)
        if self.device_hash is not None and self.device_hash != digest:
            raise ValueError(
                "device_hash: is not the SHA-256 of device_id; give one of them (device_id "
                "alone is hashed on validation)"
            )
        # The model is frozen: the id is swapped for its hash as it is built, never after.
        object.__setattr__(self, "device_hash", digest)
        object.__setattr__(self, "device_id", None)
        self.model_fields_set.add("device_hash")  # as if given: a dump without unset keeps it
        return self


def device_hash(device_id: str) -> str:
    """The hex SHA-256 of a device cookie id (UTF-8): what is stored and compared instead of
    it (``idp_sessions.device_hash``)."""
    return hashlib.sha256(device_id.encode()).hexdigest()


class SessionSeen(EventBase):
    """The session was active at ``occurred_at`` (for the idle timeout; not a logout)."""

    type: Literal["session.seen"] = "session.seen"
    session_id: Identifier


Event = Annotated[
    LogoutUser
    | LogoutProvider
    | SessionRevoke
    | UserRevokeAll
    | SessionTerminateOthers
    | SessionExpired
    | SessionBindingViolation
    | SessionStarted
    | SessionSeen,
    Field(discriminator="type"),
]

EVENT_TYPES: tuple[str, ...] = (
    "logout.user",
    "logout.provider",
    "session.revoke",
    "user.revoke_all",
    "session.terminate_others",
    "session.expired",
    "session.binding_violation",
    "session.started",
    "session.seen",
)

#: Events that report a session's life rather than end it.
ACTIVITY_EVENT_TYPES: tuple[str, ...] = ("session.started", "session.seen")

event_adapter: TypeAdapter[Event] = TypeAdapter(Event)
