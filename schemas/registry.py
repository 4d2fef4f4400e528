"""Registry contract: providers (TOML) and sessions (JSON lines) that IdP components load."""

from __future__ import annotations

import socket
from ipaddress import ip_address
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from schemas.fields import (
    AsNumber,
    Expiry,
    GeoCode,
    Identifier,
    Latitude,
    LongIdentifier,
    Longitude,
    Name,
    ShortName,
    Timestamp,
    UserAgent,
)

__all__ = [
    "GEOIP_BINDINGS",
    "IDENTIFIER_FIELDS",
    "NETWORK_BINDINGS",
    "PROVIDER_NAME_PATTERN",
    "GeoipBindingMode",
    "IpText",
    "NetworkBindingMode",
    "ProviderConfig",
    "ProviderSessionRecord",
    "RegistryRecord",
    "SessionRecord",
    "check_address",
    "registry_record_adapter",
]

PROVIDER_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,254}$"


def check_address(text: str | None) -> str | None:
    """``text`` when it is an IPv4 or IPv6 address (or None); else ValueError saying so."""
    if text is None:
        return None
    try:
        # The common case in C (a tenth of ip_address's time, which counts in a large
        # import): what inet_pton takes as IPv4, ip_address takes too (four decimal parts,
        # none over 255, no leading zero); everything else is judged by ip_address.
        socket.inet_pton(socket.AF_INET, text)
    except (OSError, ValueError):
        try:
            ip_address(text)
        except ValueError:
            raise ValueError(f"{text!r} is not an IPv4 or IPv6 address") from None
    return text


#: An IP address as text, refused unless it is one (a binding compares every later address
#: with it, whether or not GeoIP databases are configured now).
IpText = Annotated[str | None, Field(default=None, max_length=64), AfterValidator(check_address)]

NetworkBindingMode = Literal["no_binding", "bind_asn", "bind_asn_network", "bind_asn_network_ip"]
GeoipBindingMode = Literal[
    "no_binding", "bind_continent", "bind_continent_country", "bind_continent_country_city"
]
NETWORK_BINDINGS: tuple[str, ...] = NetworkBindingMode.__args__  # type: ignore[attr-defined]
GEOIP_BINDINGS: tuple[str, ...] = GeoipBindingMode.__args__  # type: ignore[attr-defined]


class ProviderConfig(BaseModel):
    """One ``[[providers]]`` table. Fields beyond these are the protocol's own settings."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: Annotated[str, Field(pattern=PROVIDER_NAME_PATTERN)]
    protocol: Annotated[str, Field(min_length=1, max_length=64)]
    enabled: bool = True
    full_logout_on_rp_initiated: bool = Field(
        default=False, description="An RP-initiated logout from this provider ends everything."
    )

    @property
    def protocol_settings(self) -> dict[str, Any]:
        """The fields beyond the common ones, for the protocol handler to validate."""
        return dict(self.model_extra or {})


class SessionRecord(BaseModel):
    """An IdP session (``"kind": "session"``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["session"]
    session_id: Identifier
    user_id: Identifier
    created: Timestamp | None = None
    last_seen: Timestamp | None = None
    expires: Expiry | None = Field(
        default=None,
        description="Default: from the session policy (session_duration, ...); after created.",
    )
    ip: IpText
    user_agent: UserAgent | None = None
    remember_me: bool = False
    stay_signed_in: bool = False
    network_binding: NetworkBindingMode = "no_binding"
    geoip_binding: GeoipBindingMode = "no_binding"
    asn: AsNumber | None = Field(
        default=None, description="Recorded at login; looked up from ip when absent."
    )
    as_org: Name | None = None
    as_network: ShortName | None = None
    continent: GeoCode | None = None
    country: GeoCode | None = None
    city: Name | None = None
    lat: Latitude | None = None
    long: Longitude | None = None

    @model_validator(mode="after")
    def _ends_after_start(self) -> Self:
        if self.created is not None and self.expires is not None and self.expires <= self.created:
            raise ValueError("expires: must be after created")
        return self


#: Identifiers an import record may give as fields of its own (OIDC and SAML's, as always).
IDENTIFIER_FIELDS = (
    "sid",
    "sub",
    "name_id",
    "name_id_format",
    "name_qualifier",
    "sp_name_qualifier",
    "session_index",
)


class ProviderSessionRecord(BaseModel):
    """A provider session opened through an IdP session (``"kind": "provider_session"``).

    Its protocol's identifiers go in ``identifiers`` (any protocol's names: a CAS
    ``ticket``, say); OIDC's and SAML's may also be given as fields of the record, as
    before. The protocol's handler checks them; they are stored as given.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["provider_session"]
    session_id: Identifier
    provider: Identifier
    identifiers: dict[Identifier, LongIdentifier] = Field(default_factory=dict)
    sid: Identifier | None = None
    sub: Identifier | None = None
    name_id: LongIdentifier | None = None
    name_id_format: Identifier | None = None
    name_qualifier: LongIdentifier | None = None
    sp_name_qualifier: LongIdentifier | None = None
    session_index: Identifier | None = None
    created: Timestamp | None = None

    @model_validator(mode="after")
    def _given_once(self) -> Self:
        if not self.identifiers:  # the usual record: nothing to compare (and it is hot)
            return self
        twice = [n for n in IDENTIFIER_FIELDS if n in self.identifiers and getattr(self, n)]
        if twice:
            raise ValueError(
                f"identifiers: {', '.join(twice)} given both as a field and in identifiers; "
                "give each once"
            )
        return self

    def given_identifiers(self) -> dict[str, str]:
        """Every identifier with a value: the record's fields and its ``identifiers``."""
        given = dict(self.identifiers)
        for name in IDENTIFIER_FIELDS:
            value = getattr(self, name)
            if value is not None:
                given[name] = value
        return given


RegistryRecord = Annotated[SessionRecord | ProviderSessionRecord, Field(discriminator="kind")]
registry_record_adapter: TypeAdapter[RegistryRecord] = TypeAdapter(RegistryRecord)
