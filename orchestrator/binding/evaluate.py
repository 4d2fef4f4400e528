"""Judge a session's network and GeoIP binding against the address a request comes from.

The login stage chose a binding mode per family and recorded the login address's facts
(:class:`BoundSession`). :func:`evaluate` looks the new address up and compares level by level,
network before GeoIP and coarsest first (ASN, then its network, then the IP; continent, then
country, then city), so a violation names the coarsest thing that changed:

=============================  ==========================================================
reason                         when
=============================  ==========================================================
``network.missing``            a network level lacks data on either side (see below)
``network.asn``                the autonomous system number differs
``network.asn_network``        same ASN, but another of its networks (CIDR)
``network.ip``                 same network, another address
``geoip.missing``              a GeoIP level lacks data on either side (see below)
``geoip.continent``            the continent code differs
``geoip.country``              same continent, another country (ISO code)
``geoip.city``                 same country, another city (English name)
=============================  ==========================================================

**Unlisted addresses.** An address is *unlisted* for a level when it is private, loopback,
link-local or otherwise not public unicast (:func:`~orchestrator.binding.geoip.is_special_address`,
whatever the database says about it), or when the database that level reads has no record for
it at all. With :attr:`UnlistedAddressPolicy.ALLOW` (the default) a level whose missing value is
explained by an unlisted address, the new one or the session's recorded one, passes; the levels
that do have data are still compared (so ``bind_asn_network_ip`` still notices a new IP). With
:attr:`UnlistedAddressPolicy.ENFORCE` any missing value is a ``*.missing`` violation. A record
that exists but lacks the field (a listed address without a country, say) is always a
``*.missing`` violation, as is a session that recorded no value although its address is listed.

A request from exactly the address recorded at login always passes: the client has not moved,
and a database update since the login is not a broken binding.

The evaluator is pure: it reads the databases and returns a result. Publishing the
``session.binding_violation`` event (:meth:`BindingViolation.event`) is the caller's job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from orchestrator.binding.bound_session import BoundSession
from orchestrator.binding.geoip import GeoipReader, IpAddress, IpFacts, parse_address
from orchestrator.binding.modes import GEOIP_DEPTH, NETWORK_DEPTH, unserved_modes
from orchestrator.binding.results import BindingOk, BindingResult, BindingViolation
from orchestrator.binding_policy import UnlistedAddressPolicy
from orchestrator.errors import ConfigurationError
from schemas.events import (
    ASN,
    Binding,
    BindingReason,
    Geo,
    GeoipBindingChange,
    IpChange,
    NetworkBindingChange,
)

__all__ = ["evaluate"]


_Value = str | int | None
_Database = Literal["asn", "city"]


@dataclass(frozen=True, slots=True)
class _Level:
    reason: BindingReason
    missing: BindingReason
    previous: _Value
    new: _Value
    database: _Database | None  # where the value comes from; None: the address itself


def evaluate(
    session: BoundSession,
    new_ip: str | IpAddress,
    reader: GeoipReader,
    policy: UnlistedAddressPolicy = UnlistedAddressPolicy.ALLOW,
) -> BindingResult:
    """Whether a request from ``new_ip`` keeps ``session``'s binding (see the module docs).

    Raises :class:`~orchestrator.binding.geoip.InvalidAddressError` for text that is not an
    address, and :class:`~orchestrator.errors.ConfigurationError` when a mode needs a database
    the reader does not have.
    """
    policy = UnlistedAddressPolicy(policy)
    unserved = unserved_modes(
        session.network_binding,
        session.geoip_binding,
        has_asn_database=reader.has_asn_database,
        has_city_database=reader.has_city_database,
    )
    if unserved:
        raise ConfigurationError("; ".join(f"{name}: {reason}" for name, reason in unserved))
    address = parse_address(new_ip)
    facts = reader.lookup(address)
    if session.ip is not None and session.ip == facts.ip:
        return BindingOk(facts)
    new = facts if not facts.special else IpFacts(ip=facts.ip, special=True)
    recorded = _RecordedAddress(session.ip, reader)
    for level in _levels(session, new):
        if level.previous is None or level.new is None:
            explained = (level.new is not None or _unlisted(new, level.database)) and (
                level.previous is not None or recorded.unlisted(level.database)
            )
            if explained and policy is UnlistedAddressPolicy.ALLOW:
                continue
            return _violation(level.missing, level, session, new)
        if not _same(level.previous, level.new):
            return _violation(level.reason, level, session, new)
    return BindingOk(facts)


def _levels(session: BoundSession, new: IpFacts) -> list[_Level]:
    """The levels ``session``'s modes compare, network before GeoIP, coarsest first."""
    network = [
        _Level("network.asn", "network.missing", session.asn, new.asn, "asn"),
        _Level("network.asn_network", "network.missing", session.as_network, new.network, "asn"),
        _Level("network.ip", "network.missing", session.ip, new.ip, None),
    ]
    geoip = [
        _Level("geoip.continent", "geoip.missing", session.continent, new.continent, "city"),
        _Level("geoip.country", "geoip.missing", session.country, new.country, "city"),
        _Level("geoip.city", "geoip.missing", session.city, new.city, "city"),
    ]
    return (
        network[: NETWORK_DEPTH[session.network_binding]]
        + geoip[: GEOIP_DEPTH[session.geoip_binding]]
    )


def _same(previous: _Value, new: _Value) -> bool:
    if isinstance(previous, str) and isinstance(new, str):
        return previous.casefold() == new.casefold()
    return previous == new


def _unlisted(facts: IpFacts, database: _Database | None) -> bool:
    """Whether ``facts`` lack data because the address is special or not in ``database``."""
    if facts.special:
        return True
    if database == "asn":
        return not facts.asn_listed
    if database == "city":
        return not facts.city_listed
    return False


class _RecordedAddress:
    """The session's login address, looked up again only if a level needs to know."""

    def __init__(self, ip: str | None, reader: GeoipReader) -> None:
        self._ip = ip
        self._reader = reader
        self._facts: IpFacts | None = None

    def unlisted(self, database: _Database | None) -> bool:
        if self._ip is None:  # nothing recorded: unknown, not unlisted
            return False
        if self._facts is None:
            self._facts = self._reader.lookup(self._ip)
        return _unlisted(self._facts, database)


def _violation(
    reason: BindingReason, level: _Level, session: BoundSession, new: IpFacts
) -> BindingViolation:
    asn = ASN(asn=new.asn, as_org=new.as_org, network=new.network)
    geo = Geo(
        continent=new.continent, country=new.country, city=new.city, lat=new.lat, long=new.long
    )
    binding: Binding
    if level.missing == "network.missing":
        previous_asn = ASN(asn=session.asn, as_org=session.as_org, network=session.as_network)
        binding = NetworkBindingChange.model_validate(
            {"reason": reason, "previous_value": previous_asn, "new_value": asn}
        )
    else:
        previous_geo = Geo(
            continent=session.continent,
            country=session.country,
            city=session.city,
            lat=session.lat,
            long=session.long,
        )
        binding = GeoipBindingChange.model_validate(
            {"reason": reason, "previous_value": previous_geo, "new_value": geo}
        )
    return BindingViolation(
        binding=binding, ip=IpChange(previous=session.ip, new=new.ip), asn=asn, geo=geo
    )
