"""What the MaxMind City and ASN databases say about an IP address.

:class:`GeoipReader` opens either database or both (a path of ``None`` leaves that database out,
and its lookups give nothing), is safe to share between threads, and can be closed while other
threads look addresses up: :meth:`GeoipReader.close` waits for lookups in flight to finish.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from pathlib import Path
from types import TracebackType
from typing import Self

import maxminddb
from maxminddb.types import Record

from orchestrator.errors import ConfigurationError, LogoutError

__all__ = [
    "GeoipClosedError",
    "GeoipDatabaseError",
    "GeoipReader",
    "InvalidAddressError",
    "IpAddress",
    "IpFacts",
    "is_special_address",
    "parse_address",
]

IpAddress = IPv4Address | IPv6Address
"""An IPv4 or IPv6 address object."""


class InvalidAddressError(LogoutError, ValueError):
    """A text that is not an IPv4 or IPv6 address; ``value`` holds it."""

    def __init__(self, value: object, what: str = "IP address") -> None:
        self.value = value
        super().__init__(f"{value!r} is not a valid {what}")


class GeoipDatabaseError(ConfigurationError):
    """A GeoIP database file is missing, unreadable or not the kind expected; names the path."""


class GeoipClosedError(LogoutError):
    """A lookup on a :class:`GeoipReader` that was closed."""


def parse_address(value: str | IpAddress) -> IpAddress:
    """``value`` as an address; IPv4-mapped IPv6 (``::ffff:192.0.2.1``) becomes IPv4.

    A zone (``%eth0``) is dropped. Raises :class:`InvalidAddressError` naming the value.
    """
    if isinstance(value, IPv4Address | IPv6Address):
        address = value
    else:
        if not isinstance(value, str):
            raise InvalidAddressError(value)
        try:
            address = ip_address(value.strip())
        except ValueError:
            raise InvalidAddressError(value) from None
    if isinstance(address, IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.scope_id is not None:  # a zone (fe80::1%eth0) says nothing about the client
            return IPv6Address(str(address).partition("%")[0])
    return address


def is_special_address(address: IpAddress) -> bool:
    """Whether ``address`` is not a public unicast address: private, loopback, link-local, etc.

    Such addresses (also shared, reserved, multicast, unspecified and documentation ranges) say
    nothing about where a client is, so session binding treats them as unlisted.
    """
    return (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_reserved
        or address.is_multicast
        or address.is_unspecified
        or not address.is_global
    )


@dataclass(frozen=True, slots=True)
class IpFacts:
    """What the databases say about one address; ``None`` where they say nothing.

    ``network`` is the ASN database's network (CIDR) containing the address. ``asn_listed`` and
    ``city_listed`` tell whether that database has a record for the address at all (a record may
    still lack some fields). ``special`` marks private, loopback, link-local and other addresses
    that are not public unicast (see :func:`is_special_address`).
    """

    ip: str
    asn: int | None = None
    as_org: str | None = None
    network: str | None = None
    continent: str | None = None
    country: str | None = None
    city: str | None = None
    lat: float | None = None
    long: float | None = None
    asn_listed: bool = False
    city_listed: bool = False
    special: bool = False


_CITY_KINDS_REFUSED = ("ASN", "ISP", "Anonymous", "Connection-Type", "Domain")
_ASN_KINDS_REFUSED = ("City", "Country", "Enterprise")


def _open(path: str | Path, label: str, refused: tuple[str, ...]) -> maxminddb.Reader:
    where = Path(path)
    if not where.is_file():
        raise GeoipDatabaseError(f"GeoIP {label} database {where}: no such file")
    try:
        try:
            reader = maxminddb.open_database(where, maxminddb.MODE_MMAP_EXT)
        except ValueError:  # the C extension is not available: memory-mapped pure Python
            reader = maxminddb.open_database(where, maxminddb.MODE_MMAP)
    except (OSError, maxminddb.InvalidDatabaseError) as exc:
        raise GeoipDatabaseError(
            f"GeoIP {label} database {where}: not a readable MaxMind database ({exc})"
        ) from exc
    kind = str(reader.metadata().database_type)
    if any(word in kind for word in refused):
        reader.close()
        raise GeoipDatabaseError(f"GeoIP {label} database {where}: wrong kind of database ({kind})")
    return reader


class GeoipReader:
    """The MaxMind City and ASN databases, opened once and shared between threads.

    ``city_db`` and ``asn_db`` are file paths; ``None`` leaves that database out. A path that
    does not name a MaxMind database raises :class:`GeoipDatabaseError` naming it.
    """

    def __init__(self, city_db: str | Path | None, asn_db: str | Path | None) -> None:
        self._condition = threading.Condition()
        self._active = 0
        self._closed = False
        self._city = _open(city_db, "City", _CITY_KINDS_REFUSED) if city_db is not None else None
        try:
            self._asn = _open(asn_db, "ASN", _ASN_KINDS_REFUSED) if asn_db is not None else None
        except GeoipDatabaseError:
            if self._city is not None:
                self._city.close()
            raise

    @property
    def has_city_database(self) -> bool:
        """Whether a City database was opened."""
        return self._city is not None

    @property
    def has_asn_database(self) -> bool:
        """Whether an ASN database was opened."""
        return self._asn is not None

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def lookup(self, ip: str | IpAddress) -> IpFacts:
        """The facts both databases hold about ``ip``.

        Raises :class:`InvalidAddressError` (naming the value) for text that is not an address,
        and :class:`GeoipClosedError` after :meth:`close`.
        """
        address = parse_address(ip)
        asn_record: Record | None = None
        prefix_len = 0
        city_record: Record | None = None
        with self._in_use():
            if self._asn is not None:
                asn_record, prefix_len = self._asn.get_with_prefix_len(address)
            if self._city is not None:
                city_record = self._city.get(address)
        return _facts(address, asn_record, prefix_len, city_record)

    def close(self) -> None:
        """Close both databases once lookups in flight have finished; idempotent."""
        with self._condition:
            self._closed = True
            while self._active:
                self._condition.wait()
            for reader in (self._city, self._asn):
                if reader is not None and not reader.closed:
                    reader.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @contextmanager
    def _in_use(self) -> Iterator[None]:
        with self._condition:
            if self._closed:
                raise GeoipClosedError("the GeoIP reader is closed")
            self._active += 1
        try:
            yield
        except maxminddb.InvalidDatabaseError as exc:
            raise GeoipDatabaseError(f"GeoIP database is corrupt: {exc}") from exc
        finally:
            with self._condition:
                self._active -= 1
                if not self._active:
                    self._condition.notify_all()


def _facts(address: IpAddress, asn: Record | None, prefix_len: int, city: Record | None) -> IpFacts:
    """The typed facts from the raw records; fields of unexpected types count as absent."""
    asn_record = asn if isinstance(asn, dict) else None
    city_record = city if isinstance(city, dict) else None
    found_asn = asn_record or {}
    found_city = city_record or {}
    location = _dict(found_city.get("location"))
    return IpFacts(
        ip=str(address),
        asn=_int(found_asn.get("autonomous_system_number")),
        as_org=_str(found_asn.get("autonomous_system_organization")),
        network=(
            str(ip_network(f"{address}/{prefix_len}", strict=False))
            if asn_record is not None
            else None
        ),
        continent=_str(_dict(found_city.get("continent")).get("code")),
        country=_str(_dict(found_city.get("country")).get("iso_code")),
        city=_str(_dict(_dict(found_city.get("city")).get("names")).get("en")),
        lat=_float(location.get("latitude")),
        long=_float(location.get("longitude")),
        asn_listed=asn_record is not None,
        city_listed=city_record is not None,
        special=is_special_address(address),
    )


def _dict(value: Record | None) -> dict[str, Record]:
    return value if isinstance(value, dict) else {}


def _str(value: Record | None) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: Record | None) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float(value: Record | None) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None
