"""Registry contract: providers (TOML) and sessions (JSON lines) that IdP components load."""

from __future__ import annotations

import socket
from ipaddress import ip_address
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter

__all__ = [
    "GEOIP_BINDINGS",
    "NETWORK_BINDINGS",
    "PROVIDER_NAME_PATTERN",
    "GeoipBindingMode",
    "IpText",
    "NetworkBindingMode",
    "ProviderConfig",
    "ProviderSessionRecord",
    "RegistryRecord",
    "SessionRecord",
    "registry_record_adapter",
]

PROVIDER_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,254}$"
_Id = Annotated[str, Field(min_length=1, max_length=255)]
_Opt = Annotated[str | None, Field(default=None, max_length=255)]


def _an_address(text: str | None) -> str | None:
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
IpText = Annotated[str | None, Field(default=None, max_length=64), AfterValidator(_an_address)]

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
    session_id: _Id
    user_id: _Id
    created: AwareDatetime | None = None
    last_seen: AwareDatetime | None = None
    expires: AwareDatetime | None = Field(
        default=None, description="Default: from the session policy (session_duration, ...)."
    )
    ip: IpText
    user_agent: str | None = None
    remember_me: bool = False
    stay_signed_in: bool = False
    network_binding: NetworkBindingMode = "no_binding"
    geoip_binding: GeoipBindingMode = "no_binding"
    asn: int | None = Field(
        default=None, description="Recorded at login; looked up from ip when absent."
    )
    as_org: _Opt
    as_network: Annotated[str | None, Field(default=None, max_length=64)]
    continent: Annotated[str | None, Field(default=None, max_length=8)]
    country: Annotated[str | None, Field(default=None, max_length=8)]
    city: _Opt
    lat: Annotated[float | None, Field(default=None, ge=-90, le=90)]
    long: Annotated[float | None, Field(default=None, ge=-180, le=180)]


class ProviderSessionRecord(BaseModel):
    """A provider session opened through an IdP session (``"kind": "provider_session"``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["provider_session"]
    session_id: _Id
    provider: _Id
    sid: _Opt
    sub: _Opt
    name_id: str | None = None
    name_id_format: _Opt
    name_qualifier: _Opt
    sp_name_qualifier: _Opt
    session_index: _Opt
    created: AwareDatetime | None = None


RegistryRecord = Annotated[SessionRecord | ProviderSessionRecord, Field(discriminator="kind")]
registry_record_adapter: TypeAdapter[RegistryRecord] = TypeAdapter(RegistryRecord)
