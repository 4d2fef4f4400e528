"""The tables an import writes, and which of their columns it reads, sets and updates."""

from __future__ import annotations

from orchestrator.store.tables import IDP_SESSIONS, PROVIDER_SESSIONS, PROVIDERS

__all__ = [
    "FACTS",
    "FACTS_GIVEN",
    "FACTS_TOUCHED",
    "IDENTIFIERS",
    "LINKS",
    "LINK_COLUMNS",
    "PROVIDERS",
    "SESSIONS",
    "SESSION_COLUMNS",
    "SESSION_UPDATES",
]

#: The import's names for the typed handles of :mod:`orchestrator.store.tables`.
SESSIONS = IDP_SESSIONS
LINKS = PROVIDER_SESSIONS
#: The login address's facts a binding compares with.
FACTS = ("asn", "as_org", "as_network", "continent", "country", "city", "lat", "long")
#: A provider session's protocol identifiers: one JSON object, opaque to the host (its
#: handler checks them).
IDENTIFIERS = ("identifiers",)
#: Columns an import sets on an IdP session that already exists (never its owner or end).
SESSION_UPDATES = (
    "last_seen",
    "expires_at",
    "ip",
    "user_agent",
    "remember_me",
    "stay_signed_in",
    "network_binding",
    "geoip_binding",
    *FACTS,
)
SESSION_COLUMNS = ("session_id", "user_id", "created_at", *SESSION_UPDATES)
FACTS_GIVEN = frozenset(FACTS)
#: Fields of a record that make its session's login facts be recorded again.
FACTS_TOUCHED = frozenset({"ip", "network_binding", "geoip_binding", *FACTS})
LINK_COLUMNS = ("session_id", "provider", "created_at", *IDENTIFIERS)
