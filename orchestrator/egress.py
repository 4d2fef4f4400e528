"""The egress policy: which destinations the worker may send a request to.

Every address an outgoing request would connect to is checked when the connection is made
(:class:`orchestrator.http_exchange.AiohttpExchange` asks :meth:`EgressPolicy.refusal` for
each address a host resolved to), so DNS rebinding and other notations of an address
(``2852039166``, ``0x7f.1``, ``[::ffff:169.254.169.254]``) meet the same rule as the plain
one. Refused by default: loopback, private (RFC 1918), link-local, unique-local, multicast,
unspecified, reserved or otherwise non-global addresses, and the cloud metadata services
(by address and by name). The operator's allow-list (setting ``egress_allow``: CIDRs,
addresses and host names) admits internal providers; ``allow_http`` does not widen it.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Final

__all__ = [
    "SETTING",
    "EgressPolicy",
    "IPAddress",
    "literal_address",
    "normal_host",
    "parse_allow_entry",
]

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

#: The setting that admits a refused destination, named in every refusal.
SETTING: Final = "egress_allow"

#: Instance metadata services: AWS/GCP/Azure/OpenStack, AWS ECS, Alibaba, Oracle, AWS IPv6.
_METADATA_ADDRESSES: Final = frozenset(
    ip_address(a)
    for a in (
        "169.254.169.254",
        "169.254.170.2",
        "100.100.100.200",
        "192.0.0.192",
        "fd00:ec2::254",
    )
)
_METADATA_NAMES: Final = frozenset({"metadata.google.internal", "metadata.goog", "metadata"})
_PRIVATE_V4: Final = tuple(ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
_UNIQUE_LOCAL: Final = ip_network("fc00::/7")
_NAT64: Final = ip_network("64:ff9b::/96")
_LEGACY_V4_CHARS: Final = frozenset("0123456789abcdefxABCDEFX.")


def normal_host(host: str) -> str:
    """A host name as compared: lower case, no brackets, no trailing dot."""
    return host.strip().strip("[]").rstrip(".").lower()


def literal_address(host: str) -> IPAddress | None:
    """The address ``host`` spells in any notation a resolver accepts, else ``None``.

    Besides the standard forms: IPv4 in the legacy ``inet_aton`` notations a URL may use to
    hide an address (``2852039166``, ``0xa9.254.43518``, ``0x7f.1``, ``0177.0.0.1``).
    """
    name = normal_host(host)
    try:
        return ip_address(name.split("%", 1)[0])  # a zone id (fe80::1%eth0) is no part of it
    except ValueError:
        pass
    if name and set(name) <= _LEGACY_V4_CHARS and name[0].isdigit():
        try:
            return IPv4Address(socket.inet_aton(name))
        except OSError:
            return None
    return None


def _embedded_v4(address: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 address carries to: mapped, 6to4 or NAT64."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_class(address: IPAddress) -> str | None:
    """Why ``address`` is refused by default (``"a loopback address"``), or ``None``."""
    if isinstance(address, IPv6Address):
        embedded = _embedded_v4(address)
        if embedded is not None:
            return address_class(embedded)
    if address in _METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if isinstance(address, IPv4Address) and any(address in n for n in _PRIVATE_V4):
        return "a private address"
    if isinstance(address, IPv6Address) and address in _UNIQUE_LOCAL:
        return "a unique-local address"
    if not address.is_global or address.is_reserved:
        return "a reserved (non-global) address"
    return None


def parse_allow_entry(entry: str) -> IPNetwork | str:
    """One ``egress_allow`` entry: a network (CIDR or one address) or a host name.

    Raise ``ValueError`` saying what a valid entry looks like.
    """
    text = entry.strip()
    if not text:
        raise ValueError("an empty entry; give a CIDR (10.1.0.0/16), an address or a host name")
    try:
        return ip_network(text.strip("[]"), strict=False)
    except ValueError:
        pass
    if "/" in text:
        raise ValueError(f"{text!r} is not a CIDR network (e.g. 10.1.0.0/16 or fd12::/48)")
    name = normal_host(text)
    if literal_address(name) is not None or not all(
        label and len(label) <= 63 and label.replace("-", "").replace("_", "").isalnum()
        for label in name.split(".")
    ):
        raise ValueError(
            f"{text!r} is neither a CIDR network, an address in standard notation, nor a host name"
        )
    return name


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    """Refuse the default-refused classes unless the allow-list admits the host or address."""

    networks: tuple[IPNetwork, ...] = ()
    hosts: frozenset[str] = frozenset()

    @classmethod
    def from_entries(cls, entries: Iterable[str]) -> EgressPolicy:
        """The policy of an ``egress_allow`` list (entries as :func:`parse_allow_entry`)."""
        parsed = [parse_allow_entry(e) for e in entries]
        return cls(
            tuple(p for p in parsed if not isinstance(p, str)),
            frozenset(p for p in parsed if isinstance(p, str)),
        )

    def admits_host(self, host: str) -> bool:
        """``host`` is named in the allow-list (every address it resolves to is admitted)."""
        return normal_host(host) in self.hosts

    def name_refusal(self, host: str) -> str | None:
        """Why ``host`` is refused by its name alone (before any resolution), or ``None``."""
        name = normal_host(host)
        if name in self.hosts:
            return None
        address = literal_address(name)
        if address is not None:
            return self.refusal(host, address)
        if name in _METADATA_NAMES:
            return self._reason(host, None, "a cloud metadata host name")
        return None

    def refusal(self, host: str, address: IPAddress) -> str | None:
        """Why connecting to ``address`` (which ``host`` gave) is refused, or ``None``."""
        if self.admits_host(host):
            return None
        why = address_class(address)
        if why is None:
            return None
        embedded = _embedded_v4(address) if isinstance(address, IPv6Address) else None
        seen = (address,) if embedded is None else (address, embedded)
        if any(a in n for a in seen for n in self.networks):
            return None
        return self._reason(host, address, why)

    @staticmethod
    def _reason(host: str, address: IPAddress | None, why: str) -> str:
        verb = "is" if address is None or literal_address(host) is not None else "resolves to"
        what = f"{normal_host(host)!r} {verb} {why}"
        return (
            f"refused by the egress policy: {what}; add the host or its network to "
            f"{SETTING} to admit it"
        )
