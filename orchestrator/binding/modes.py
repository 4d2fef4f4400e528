"""The binding modes of each family, and whether the configured databases can serve them."""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar

from orchestrator.errors import LogoutError

__all__ = [
    "GEOIP_DEPTH",
    "NETWORK_DEPTH",
    "BindingModeError",
    "GeoipBinding",
    "NetworkBinding",
    "as_mode",
    "unserved_modes",
]


class NetworkBinding(StrEnum):
    """How closely a session is bound to its login network; each mode adds one level."""

    NO_BINDING = "no_binding"
    BIND_ASN = "bind_asn"
    BIND_ASN_NETWORK = "bind_asn_network"
    BIND_ASN_NETWORK_IP = "bind_asn_network_ip"


class GeoipBinding(StrEnum):
    """How closely a session is bound to its login location; each mode adds one level."""

    NO_BINDING = "no_binding"
    BIND_CONTINENT = "bind_continent"
    BIND_CONTINENT_COUNTRY = "bind_continent_country"
    BIND_CONTINENT_COUNTRY_CITY = "bind_continent_country_city"


class BindingModeError(LogoutError, ValueError):
    """A binding mode or recorded value of a :class:`BoundSession` is not valid."""


_M = TypeVar("_M", NetworkBinding, GeoipBinding)

#: How many levels each mode compares.
NETWORK_DEPTH = {
    NetworkBinding.NO_BINDING: 0,
    NetworkBinding.BIND_ASN: 1,
    NetworkBinding.BIND_ASN_NETWORK: 2,
    NetworkBinding.BIND_ASN_NETWORK_IP: 3,
}
GEOIP_DEPTH = {
    GeoipBinding.NO_BINDING: 0,
    GeoipBinding.BIND_CONTINENT: 1,
    GeoipBinding.BIND_CONTINENT_COUNTRY: 2,
    GeoipBinding.BIND_CONTINENT_COUNTRY_CITY: 3,
}


#: The setting naming the database each binding family reads.
_DATABASE_SETTINGS = {"network_binding": "geoip_asn_db", "geoip_binding": "geoip_city_db"}


def unserved_modes(
    network_binding: NetworkBinding | str,
    geoip_binding: GeoipBinding | str,
    *,
    has_asn_database: bool,
    has_city_database: bool,
) -> list[tuple[str, str]]:
    """``(field, reason)`` for each mode the configured databases cannot serve; empty if none.

    A network binding other than ``no_binding`` reads the ASN database (``geoip_asn_db``),
    a GeoIP binding other than ``no_binding`` the City database (``geoip_city_db``). Raises
    :class:`BindingModeError` for a value that is not a mode.
    """
    network = as_mode(NetworkBinding, network_binding, "network_binding")
    geoip = as_mode(GeoipBinding, geoip_binding, "geoip_binding")
    unserved: list[tuple[str, str]] = []
    if NETWORK_DEPTH[network] and not has_asn_database:
        unserved.append(("network_binding", _unserved(network, "ASN", "network_binding")))
    if GEOIP_DEPTH[geoip] and not has_city_database:
        unserved.append(("geoip_binding", _unserved(geoip, "City", "geoip_binding")))
    return unserved


def _unserved(mode: NetworkBinding | GeoipBinding, database: str, family: str) -> str:
    return (
        f"{mode.value} needs the GeoIP {database} database, and none is configured "
        f"(set {_DATABASE_SETTINGS[family]}, or use no_binding)"
    )


def as_mode(kind: type[_M], value: object, name: str) -> _M:
    """``value`` as a mode of ``kind``, or a :class:`BindingModeError` listing the modes."""
    choices = [member.value for member in kind]
    if isinstance(value, str) and value in choices:
        return kind(value)
    raise BindingModeError(f"{name}: {value!r} is not one of {', '.join(choices)}")
