"""A session's binding modes and the facts recorded for its login address."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import ip_network

from orchestrator.binding.geoip import InvalidAddressError, IpFacts, parse_address
from orchestrator.binding.modes import BindingModeError, GeoipBinding, NetworkBinding, as_mode

__all__ = ["BoundSession"]


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
            self,
            "network_binding",
            as_mode(NetworkBinding, self.network_binding, "network_binding"),
        )
        object.__setattr__(
            self, "geoip_binding", as_mode(GeoipBinding, self.geoip_binding, "geoip_binding")
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
            network_binding=as_mode(NetworkBinding, network_binding, "network_binding"),
            geoip_binding=as_mode(GeoipBinding, geoip_binding, "geoip_binding"),
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
