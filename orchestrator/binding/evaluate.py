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

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from ipaddress import ip_network
from typing import ClassVar, Literal, TypeVar
from uuid import uuid4

from orchestrator.binding.geoip import (
    GeoipReader,
    InvalidAddressError,
    IpAddress,
    IpFacts,
    parse_address,
)
from orchestrator.binding_policy import UnlistedAddressPolicy
from orchestrator.errors import ConfigurationError, LogoutError
from schemas.events import (
    ASN,
    Binding,
    BindingReason,
    Geo,
    GeoipBindingChange,
    HttpRequest,
    Initiator,
    IpChange,
    NetworkBindingChange,
    RequestInfo,
    SessionBindingViolation,
)

__all__ = [
    "BindingModeError",
    "BindingOk",
    "BindingResult",
    "BindingViolation",
    "BoundSession",
    "GeoipBinding",
    "NetworkBinding",
    "UnlistedAddressPolicy",
    "evaluate",
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

_NETWORK_DEPTH = {
    NetworkBinding.NO_BINDING: 0,
    NetworkBinding.BIND_ASN: 1,
    NetworkBinding.BIND_ASN_NETWORK: 2,
    NetworkBinding.BIND_ASN_NETWORK_IP: 3,
}
_GEOIP_DEPTH = {
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
    network = _mode(NetworkBinding, network_binding, "network_binding")
    geoip = _mode(GeoipBinding, geoip_binding, "geoip_binding")
    unserved: list[tuple[str, str]] = []
    if _NETWORK_DEPTH[network] and not has_asn_database:
        unserved.append(("network_binding", _unserved(network, "ASN", "network_binding")))
    if _GEOIP_DEPTH[geoip] and not has_city_database:
        unserved.append(("geoip_binding", _unserved(geoip, "City", "geoip_binding")))
    return unserved


def _unserved(mode: NetworkBinding | GeoipBinding, database: str, family: str) -> str:
    return (
        f"{mode.value} needs the GeoIP {database} database, and none is configured "
        f"(set {_DATABASE_SETTINGS[family]}, or use no_binding)"
    )


@dataclass(frozen=True, slots=True)
class BoundSession:
    """A session's binding modes and the facts recorded for its login address.

    Modes may be given as their string values. ``ip`` and ``as_network`` are normalised
    (``::ffff:192.0.2.1`` is ``192.0.2.1``); an invalid value raises :class:`BindingModeError`.
    """

    session_id: str
    network_binding: NetworkBinding = NetworkBinding.NO_BINDING
    geoip_binding: GeoipBinding = GeoipBinding.NO_BINDING
    ip: str | None = None
    asn: int | None = None
    as_org: str | None = None
    as_network: str | None = None
    continent: str | None = None
    country: str | None = None
    city: str | None = None
    lat: float | None = None
    long: float | None = None

    def __post_init__(self) -> None:
        if not self.session_id:
            raise BindingModeError("a bound session needs a session_id")
        object.__setattr__(
            self, "network_binding", _mode(NetworkBinding, self.network_binding, "network_binding")
        )
        object.__setattr__(
            self, "geoip_binding", _mode(GeoipBinding, self.geoip_binding, "geoip_binding")
        )
        if self.ip is not None:
            try:
                object.__setattr__(self, "ip", str(parse_address(self.ip)))
            except InvalidAddressError as exc:
                raise BindingModeError(f"ip: {exc}") from exc
        if self.as_network is not None:
            try:
                network = ip_network(self.as_network, strict=False)
            except (TypeError, ValueError):
                raise BindingModeError(
                    f"as_network: {self.as_network!r} is not a valid network (CIDR)"
                ) from None
            object.__setattr__(self, "as_network", str(network))

    @classmethod
    def at_login(
        cls,
        session_id: str,
        facts: IpFacts,
        *,
        network_binding: NetworkBinding | str = NetworkBinding.NO_BINDING,
        geoip_binding: GeoipBinding | str = GeoipBinding.NO_BINDING,
    ) -> BoundSession:
        """The session as bound at login from ``facts`` (:meth:`GeoipReader.lookup`).

        Nothing but the IP is recorded for a private, loopback or other special address.
        """
        known = not facts.special
        return cls(
            session_id=session_id,
            network_binding=_mode(NetworkBinding, network_binding, "network_binding"),
            geoip_binding=_mode(GeoipBinding, geoip_binding, "geoip_binding"),
            ip=facts.ip,
            asn=facts.asn if known else None,
            as_org=facts.as_org if known else None,
            as_network=facts.network if known else None,
            continent=facts.continent if known else None,
            country=facts.country if known else None,
            city=facts.city if known else None,
            lat=facts.lat if known else None,
            long=facts.long if known else None,
        )


def _mode(kind: type[_M], value: object, name: str) -> _M:
    """``value`` as a mode of ``kind``, or a :class:`BindingModeError` listing the modes."""
    choices = [member.value for member in kind]
    if isinstance(value, str) and value in choices:
        return kind(value)
    raise BindingModeError(f"{name}: {value!r} is not one of {', '.join(choices)}")


@dataclass(frozen=True, slots=True)
class BindingOk:
    """The binding holds. ``facts`` are the new address's, e.g. to show or log."""

    facts: IpFacts
    ok: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class BindingViolation:
    """The binding broke: the coarsest level that changed or lacks data, and what was compared.

    ``binding`` holds the reason and the two records compared: ASN records for ``network.*``
    reasons, GeoIP records for ``geoip.*`` ones; the previous one is what the session recorded
    at login, the new one the new address's. ``ip`` holds the recorded and the new address;
    ``asn`` and ``geo`` describe the new address (empty for a private or other special address).
    """

    binding: Binding
    ip: IpChange
    asn: ASN = field(default_factory=ASN)
    geo: Geo = field(default_factory=Geo)
    ok: ClassVar[bool] = False

    @property
    def reason(self) -> BindingReason:
        """The coarsest thing that changed, e.g. ``network.asn``."""
        return self.binding.reason

    @property
    def previous_value(self) -> ASN | Geo:
        """The record the session holds from its login."""
        return self.binding.previous_value

    @property
    def new_value(self) -> ASN | Geo:
        """The new address's record."""
        return self.binding.new_value

    def event(
        self,
        session_id: str,
        initiator: Initiator = "policy",
        request: HttpRequest | None = None,
        *,
        actor: str | None = None,
    ) -> SessionBindingViolation:
        """The ``session.binding_violation`` event to publish, with a fresh id, dated now (UTC).

        ``request`` is the HTTP request that broke the binding; it becomes ``http_request``,
        and with the new address the event's ``request``.
        """
        http = request if request is not None else HttpRequest()
        return SessionBindingViolation(
            event_id=uuid4(),
            occurred_at=datetime.now(UTC),
            initiator=initiator,
            actor=actor,
            request=RequestInfo(
                ip=self.ip.new,
                user_agent=http.user_agent,
                path=http.path,
                method=http.method,
                args=dict(http.args),
            ),
            session_id=session_id,
            binding=self.binding,
            ip=self.ip,
            asn=self.asn,
            geo=self.geo,
            http_request=http,
        )


BindingResult = BindingOk | BindingViolation

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
    network_depth = _NETWORK_DEPTH[session.network_binding]
    geoip_depth = _GEOIP_DEPTH[session.geoip_binding]
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
    levels = [
        _Level("network.asn", "network.missing", session.asn, new.asn, "asn"),
        _Level("network.asn_network", "network.missing", session.as_network, new.network, "asn"),
        _Level("network.ip", "network.missing", session.ip, new.ip, None),
    ][:network_depth] + [
        _Level("geoip.continent", "geoip.missing", session.continent, new.continent, "city"),
        _Level("geoip.country", "geoip.missing", session.country, new.country, "city"),
        _Level("geoip.city", "geoip.missing", session.city, new.city, "city"),
    ][:geoip_depth]
    recorded = _RecordedAddress(session.ip, reader)
    for level in levels:
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
