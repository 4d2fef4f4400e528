"""IdP session records merged into rows: the owner kept, the binding checked, facts recorded."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.binding import BoundSession, InvalidAddressError, IpFacts, unserved_modes
from orchestrator.errors import Problem
from orchestrator.importing.columns import FACTS, FACTS_GIVEN, FACTS_TOUCHED
from orchestrator.importing.merged import Merged
from orchestrator.session_policy import SessionPolicy
from orchestrator.store import utcnow
from schemas import SessionRecord

__all__ = ["GeoipDatabases", "SessionRows"]

#: Fields an update takes from a record only when the record gives them.
_SETTINGS = ("remember_me", "stay_signed_in", "network_binding", "geoip_binding")


@dataclass(frozen=True, slots=True)
class GeoipDatabases:
    """Which GeoIP databases are configured (``geoip_asn_db``, ``geoip_city_db``)."""

    asn: bool = False
    city: bool = False


class SessionRows:
    """Merges each IdP session record into ``merged.sessions``, or says why it cannot be."""

    def __init__(
        self,
        merged: Merged,
        policy: SessionPolicy,
        lookup: Callable[[str], IpFacts] | None,
        databases: GeoipDatabases,
    ) -> None:
        self._merged = merged
        self._policy = policy
        self._lookup = lookup
        self._databases = databases

    def merge(
        self, rec: SessionRecord, existing: Mapping[str, dict[str, Any]], label: str | None
    ) -> None:
        """Merge ``rec`` with its row so far (this import's, else the stored one, if any)."""
        where = label or f"session {rec.session_id!r}"
        bound = rec.network_binding != "no_binding" or rec.geoip_binding != "no_binding"
        row = self._merged.sessions.get(rec.session_id) or existing.get(rec.session_id)
        if bound:
            self._check_binding(rec, row, where)
        if row is None:
            row = self._new_row(rec)
            self._merged.counts.sessions_created += 1
            if bound or FACTS_GIVEN & rec.model_fields_set:
                self._record_facts(row, rec, where)
        elif not self._update_row(row, rec, where):
            return
        row["expires_at"] = rec.expires or row["expires_at"]
        row["ip"] = rec.ip or row["ip"]
        row["user_agent"] = rec.user_agent or row["user_agent"]
        self._merged.sessions[rec.session_id] = row

    def _check_binding(self, rec: SessionRecord, row: dict[str, Any] | None, where: str) -> None:
        """A binding needs a database that serves its modes, and a login address."""
        unserved = unserved_modes(
            rec.network_binding,
            rec.geoip_binding,
            has_asn_database=self._databases.asn,
            has_city_database=self._databases.city,
        )
        self._merged.problems.extend(Problem(where, name, reason) for name, reason in unserved)
        if rec.ip is None and (row is None or row["ip"] is None):
            # Nothing to compare a later address with: every check would end the session.
            self._merged.problems.append(
                Problem(
                    where,
                    "ip",
                    "a network or GeoIP binding needs the login's address: give ip, or use "
                    "no_binding",
                )
            )

    def _new_row(self, rec: SessionRecord) -> dict[str, Any]:
        started = rec.created or utcnow()
        return {
            "session_id": rec.session_id,
            "user_id": rec.user_id,
            "created_at": started,
            "last_seen": rec.last_seen or started,
            "expires_at": self._policy.expires_at(
                started, remember_me=rec.remember_me, stay_signed_in=rec.stay_signed_in
            ),
            "ip": None,
            "user_agent": None,
            "remember_me": rec.remember_me,
            "stay_signed_in": rec.stay_signed_in,
            "network_binding": rec.network_binding,
            "geoip_binding": rec.geoip_binding,
            **dict.fromkeys(FACTS),
        }

    def _update_row(self, row: dict[str, Any], rec: SessionRecord, where: str) -> bool:
        """Apply ``rec`` to a row of the same session; False if it names another owner."""
        if row["user_id"] != rec.user_id:
            self._merged.problems.append(
                Problem(
                    where,
                    "user_id",
                    f"belongs to user {row['user_id']!r}; a session never moves",
                )
            )
            return False
        self._merged.counts.sessions_updated += 1
        given = rec.model_fields_set
        if rec.last_seen is not None:
            row["last_seen"] = rec.last_seen
        for name in _SETTINGS:
            if name in given:
                row[name] = getattr(rec, name)
        if given & FACTS_TOUCHED:
            self._record_facts(row, rec, where)
        return True

    def _record_facts(self, row: dict[str, Any], rec: SessionRecord, where: str) -> None:
        """The login address's facts a binding compares with: given, or looked up."""
        given = {name: getattr(rec, name) for name in FACTS}
        if any(value is not None for value in given.values()):
            row.update(given)
            return
        bound = row["network_binding"] != "no_binding" or row["geoip_binding"] != "no_binding"
        address = rec.ip or row["ip"]
        if not bound or address is None or self._lookup is None:
            return
        try:
            facts = self._lookup(address)
        except InvalidAddressError as exc:
            self._merged.problems.append(Problem(where, "ip", str(exc)))
            return
        login = BoundSession.at_login(rec.session_id, facts)
        row.update({name: getattr(login, name) for name in FACTS})
