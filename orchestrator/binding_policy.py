"""The unlisted-address policy of session binding: a setting, so it lives apart from the
binding package (GeoIP databases, event models), which reading the settings does not need."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["UnlistedAddressPolicy"]


class UnlistedAddressPolicy(StrEnum):
    """What a level lacking data because of an unlisted address gives (module documentation)."""

    ALLOW = "allow"
    """The level passes (default): private, loopback and unlisted addresses cause no violation."""
    ENFORCE = "enforce"
    """The level is a ``network.missing`` or ``geoip.missing`` violation."""
