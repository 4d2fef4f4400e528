"""What :func:`~orchestrator.binding.evaluate` finds: the binding holds, or how it broke."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import ClassVar
from uuid import uuid4

from orchestrator.binding.geoip import IpFacts
from schemas.events import (
    ASN,
    Binding,
    BindingReason,
    Geo,
    HttpRequest,
    Initiator,
    IpChange,
    RequestInfo,
    SessionBindingViolation,
)

__all__ = ["BindingOk", "BindingResult", "BindingViolation"]


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
