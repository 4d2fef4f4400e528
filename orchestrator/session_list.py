"""Who is signed in where: a user's sessions as an operator or a "your sessions" page sees
them (``sessions list``, ``GET /v1/users/{id}/sessions``).

Each IdP session with its times, address, device (browser and OS read from the stored user
agent), place (the login's recorded city and country, else a GeoIP lookup of its address when
a database is configured), binding modes, remember-me and stay-signed-in, the remember-device
verdict of its login, and its provider sessions. Open sessions only unless asked: an ended
session is history, which the audit trail tells in full.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, Select, select

from orchestrator.binding import InvalidAddressError, IpFacts
from orchestrator.store import Database
from orchestrator.store.sql import engine_of
from orchestrator.store.tables import IDP_SESSIONS, PROVIDER_SESSIONS, PROVIDERS
from orchestrator.user_agents import describe_device
from schemas import ProviderSessionView, SessionLocation, SessionView
from schemas.errors import InputError, Problem
from schemas.registry import check_address

__all__ = ["DEFAULT_LIMIT", "SessionFilter", "list_sessions", "provider_exists"]

#: Sessions listed at most unless the filter says otherwise.
DEFAULT_LIMIT = 1000

#: Looks an address up in the GeoIP databases (``GeoipReader.lookup``).
Lookup = Callable[[str], IpFacts]


@dataclass(frozen=True, slots=True)
class SessionFilter:
    """Which sessions to list: of a user, from an address, with a provider (at least one;
    together they narrow), open ones unless ``include_ended``, newest first."""

    user_id: str | None = None
    ip: str | None = None
    provider: str | None = None
    include_ended: bool = False
    limit: int = DEFAULT_LIMIT

    def check(self) -> None:
        """InputError when nothing narrows the listing (every session of the IdP)."""
        if self.user_id is None and self.ip is None and self.provider is None:
            raise InputError(
                [Problem("", "user_id", "give a user, an IP or a provider to list sessions of")]
            )
        if self.limit < 1:
            raise InputError([Problem("", "limit", f"must be 1 or more, not {self.limit}")])
        try:  # no session's login came from a text that is no address: say so
            check_address(self.ip)
        except ValueError as exc:
            raise InputError([Problem("", "ip", str(exc))]) from None

    def query(self) -> Select[Any]:
        s = IDP_SESSIONS.c
        query = select(IDP_SESSIONS)
        if self.user_id is not None:
            query = query.where(s.user_id == self.user_id)
        if self.ip is not None:
            query = query.where(s.ip == self.ip)
        if self.provider is not None:
            links = select(PROVIDER_SESSIONS.c.session_id).where(
                PROVIDER_SESSIONS.c.provider == self.provider
            )
            if not self.include_ended:
                links = links.where(PROVIDER_SESSIONS.c.ended_at.is_(None))
            query = query.where(s.session_id.in_(links))
        if not self.include_ended:
            query = query.where(s.ended_at.is_(None))
        return query.order_by(s.created_at.desc(), s.session_id).limit(self.limit)


def provider_exists(database: Database, name: str) -> bool:
    """Whether a provider of that name is loaded (to tell "none of its sessions" from "no
    such provider")."""
    with engine_of(database).connect() as conn:
        found = conn.execute(select(PROVIDERS.c.name).where(PROVIDERS.c.name == name)).first()
    return found is not None


def list_sessions(
    database: Database, where: SessionFilter, lookup: Lookup | None = None
) -> list[SessionView]:
    """The sessions ``where`` selects; ``lookup`` places those whose login recorded no place."""
    where.check()
    with engine_of(database).connect() as conn:
        rows = conn.execute(where.query()).all()
        links = _provider_sessions(conn, [row.session_id for row in rows], where.include_ended)
    return [_view(row, links.get(row.session_id, []), lookup) for row in rows]


def _provider_sessions(
    conn: Any, session_ids: Sequence[str], include_ended: bool
) -> dict[str, list[ProviderSessionView]]:
    if not session_ids:
        return {}
    p = PROVIDER_SESSIONS.c
    query = (
        select(p.session_id, p.provider, PROVIDERS.c.protocol, p.created_at, p.ended_at)
        .select_from(PROVIDER_SESSIONS.outerjoin(PROVIDERS, PROVIDERS.c.name == p.provider))
        .where(p.session_id.in_(session_ids))
        .order_by(p.session_id, p.provider)
    )
    if not include_ended:
        query = query.where(p.ended_at.is_(None))
    found: dict[str, list[ProviderSessionView]] = defaultdict(list)
    for row in conn.execute(query):
        found[row.session_id].append(
            ProviderSessionView(
                provider=row.provider,
                protocol=row.protocol,
                created=row.created_at,
                ended=row.ended_at,
            )
        )
    return found


def _location(row: Row[Any], lookup: Lookup | None) -> SessionLocation:
    if row.city is not None or row.country is not None:
        return SessionLocation(city=row.city, country=row.country, source="login")
    if lookup is None or row.ip is None:
        return SessionLocation()
    try:
        facts = lookup(row.ip)
    except InvalidAddressError:  # stored before addresses were checked
        return SessionLocation()
    if facts.city is None and facts.country is None:
        return SessionLocation()
    return SessionLocation(city=facts.city, country=facts.country, source="geoip")


def _view(row: Row[Any], links: list[ProviderSessionView], lookup: Lookup | None) -> SessionView:
    return SessionView(
        session_id=row.session_id,
        user_id=row.user_id,
        created=row.created_at,
        last_activity=row.last_seen,
        expires=row.expires_at,
        ended=row.ended_at,
        end_reason=row.end_reason,
        ip=row.ip,
        device=describe_device(row.user_agent),
        location=_location(row, lookup),
        network_binding=row.network_binding,
        geoip_binding=row.geoip_binding,
        remember_me=row.remember_me,
        stay_signed_in=row.stay_signed_in,
        known_device=row.known_device,
        known_device_reason=row.known_device_reason,
        provider_sessions=links,
    )
