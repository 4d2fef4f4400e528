"""GeoIP test databases the tests write themselves, with ``mmdb-writer``.

The binding tests need a City and an ASN database in MaxMind's format. Rather than ship
MaxMind's binary test files (and their licence), the tests generate both from the tables
below, so each test can say exactly which network maps to which ASN, country and city. The
values imitate MaxMind's public test databases (same addresses, same answers), which keeps the
expected values in the tests familiar to anyone who knows those files.

ASN database (``GeoLite2-ASN``):

=================  ======  ==============================
network            ASN     organisation
=================  ======  ==============================
1.128.0.0/11       1221    Telstra Pty Ltd
12.81.92.0/22      7018    AT&T Services
12.81.96.0/19      7018    (none)
89.160.0.0/17      29518   Bredband2 AB
214.0.0.0/8        721     DoD Network Information Center
216.160.64.0/18    209     (none)
=================  ======  ==============================

City database (``GeoIP2-City``): see :data:`CITY_NETWORKS`; notably 81.2.69.142/31 and
81.2.69.160/27 are London (EU/GB), 2.125.160.216/29 Boxford (EU/GB), 89.160.20.112/28 and
89.160.20.128/25 Linköping (EU/SE), 216.160.83.56/29 Milton (NA/US), 214.0.0.0/24 Singapore
(AS/SG), 214.0.1.0/24 Melbourne (OC/AU), 2001:480:10::/48 San Diego (NA/US); 2.3.3.0/24 has a
continent (EU) and nothing else; 214.1.1.0/24 is listed with an empty record; 1.128.0.0/11 is
not listed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmdb_writer import MmdbF64, MmdbU16, MmdbU32, MMDBWriter
from netaddr import IPSet

__all__ = ["ASN_NETWORKS", "CITY_NETWORKS", "GeoipFiles", "write_geoip_databases"]


def _asn(number: int, organisation: str | None = None) -> dict[str, Any]:
    """An ASN record as MaxMind lays it out (the organisation is sometimes missing)."""
    record: dict[str, Any] = {"autonomous_system_number": number}
    if organisation is not None:
        record["autonomous_system_organization"] = organisation
    return record


ASN_NETWORKS: dict[str, dict[str, Any]] = {
    "1.128.0.0/11": _asn(1221, "Telstra Pty Ltd"),
    "12.81.92.0/22": _asn(7018, "AT&T Services"),
    "12.81.96.0/19": _asn(7018),
    "89.160.0.0/17": _asn(29518, "Bredband2 AB"),
    "214.0.0.0/8": _asn(721, "DoD Network Information Center"),
    "216.160.64.0/18": _asn(209),
}


def _place(
    continent: str, country: str, city: str, lat: float, long: float, radius: int
) -> dict[str, Any]:
    """A City record as MaxMind lays it out (the fields the reader uses, and a few more)."""
    return {
        "continent": {"code": continent},
        "country": {"iso_code": country},
        "city": {"names": {"en": city}},
        "location": {"latitude": lat, "longitude": long, "accuracy_radius": radius},
    }


_LONDON = _place("EU", "GB", "London", 51.5142, -0.0931, 10)
_LINKOPING = _place("EU", "SE", "Linköping", 58.4167, 15.6167, 76)

CITY_NETWORKS: dict[str, dict[str, Any]] = {
    "81.2.69.142/31": _LONDON,
    "81.2.69.160/27": _LONDON,
    "2.125.160.216/29": _place("EU", "GB", "Boxford", 51.75, -1.25, 100),
    "89.160.20.112/28": _LINKOPING,
    "89.160.20.128/25": _LINKOPING,
    "216.160.83.56/29": _place("NA", "US", "Milton", 47.2513, -122.3149, 22),
    "214.0.0.0/24": _place("AS", "SG", "Singapore", 1.336, 103.7716, 10),
    "214.0.1.0/24": _place("OC", "AU", "Melbourne", -37.8159, 144.9669, 20),
    "214.1.1.0/24": {},
    "2.3.3.0/24": {"continent": {"code": "EU"}},
    "2001:480:10::/48": _place("NA", "US", "San Diego", 32.7203, -117.1552, 20),
}


@dataclass(frozen=True, slots=True)
class GeoipFiles:
    """Paths of the written City and ASN databases."""

    city: Path
    asn: Path


def _typed(value: Any, key: str = "") -> Any:
    """Numbers in the types MaxMind's databases use (the reader gets ints and floats back)."""
    if isinstance(value, dict):
        return {name: _typed(item, name) for name, item in value.items()}
    if isinstance(value, float):
        return MmdbF64(value)
    if isinstance(value, int):
        return MmdbU16(value) if key == "accuracy_radius" else MmdbU32(value)
    return value


def _write(path: Path, database_type: str, networks: dict[str, dict[str, Any]]) -> Path:
    writer = MMDBWriter(
        ip_version=6,
        ipv4_compatible=True,
        database_type=database_type,
        languages=["en"],
        description=f"logout-orchestrator test data ({database_type})",
    )
    for network, record in networks.items():
        writer.insert_network(IPSet([network]), _typed(record))
    writer.to_db_file(str(path))
    return path


def write_geoip_databases(directory: Path) -> GeoipFiles:
    """Write ``city.mmdb`` and ``asn.mmdb`` into ``directory`` from the tables above."""
    directory.mkdir(parents=True, exist_ok=True)
    return GeoipFiles(
        city=_write(directory / "city.mmdb", "GeoIP2-City", CITY_NETWORKS),
        asn=_write(directory / "asn.mmdb", "GeoLite2-ASN", ASN_NETWORKS),
    )
