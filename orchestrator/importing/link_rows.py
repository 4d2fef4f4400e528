"""Provider session records merged into rows, their references and identifiers checked."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection

from orchestrator.errors import Problem
from orchestrator.importing.merged import Merged
from orchestrator.importing.stored import existing_ids, providers, stored_links
from orchestrator.store import utcnow
from protocols import ProtocolHandler, ProviderInfo
from schemas import ProviderSessionRecord

__all__ = ["LinkRows"]


class LinkRows:
    """Merges provider session records into ``merged.links``, after the IdP sessions."""

    def __init__(
        self,
        merged: Merged,
        handlers: Mapping[str, ProtocolHandler],
        refused_sessions: Collection[str],
    ) -> None:
        self._merged = merged
        self._handlers = handlers
        # IdP sessions the input itself refused: their provider sessions are not named again.
        self._refused_sessions = frozenset(refused_sessions)

    def merge(
        self, conn: Connection, links: Sequence[ProviderSessionRecord], where: Mapping[int, str]
    ) -> None:
        """Merge every record whose provider and IdP session exist; then check identifiers."""
        found = providers(conn, self._handlers, {link.provider for link in links})
        wanted = {link.session_id for link in links}
        known_ids = set(self._merged.sessions)
        stored_ids = existing_ids(conn, wanted - known_ids)
        # Only a session stored before this import can already have provider sessions.
        stored = stored_links(conn, (wanted & self._merged.stored) | stored_ids)
        self._merged.stored_keys = set(stored)
        session_ids = known_ids | stored_ids
        labels: dict[tuple[str, str], str] = {}
        for link in links:
            label = where.get(id(link)) or f"provider session {link.session_id}/{link.provider}"
            if not self._references_known(link, label, found, session_ids):
                continue
            key = (link.session_id, link.provider)
            self._merge_one(link, key, stored.get(key))
            labels[key] = label
        self._check_identifiers(found, labels)

    def _references_known(
        self,
        link: ProviderSessionRecord,
        label: str,
        found: Mapping[str, ProviderInfo],
        session_ids: Collection[str],
    ) -> bool:
        """Whether ``link``'s provider and IdP session exist; a problem for each that does not."""
        known = True
        if link.provider not in found:
            self._merged.problems.append(
                Problem(label, "provider", "no such provider (load it first)")
            )
            known = False
        if link.session_id not in session_ids:
            if link.session_id not in self._refused_sessions:
                self._merged.problems.append(Problem(label, "session_id", "no such IdP session"))
            known = False
        return known

    def _merge_one(
        self,
        link: ProviderSessionRecord,
        key: tuple[str, str],
        stored: dict[str, Any] | None,
    ) -> None:
        row = self._merged.links.get(key) or stored
        if row is None:
            row = {
                "session_id": link.session_id,
                "provider": link.provider,
                "created_at": link.created or utcnow(),
                "identifiers": {},
            }
            self._merged.counts.links_created += 1
        else:
            self._merged.counts.links_updated += 1
        row["identifiers"] = {**row["identifiers"], **link.given_identifiers()}
        self._merged.links[key] = row

    def _check_identifiers(
        self, found: Mapping[str, ProviderInfo], labels: Mapping[tuple[str, str], str]
    ) -> None:
        """Each provider session as it will be stored, checked by its protocol's handler."""
        counts = self._merged.counts
        for key, label in labels.items():
            info = found[key[1]]
            handler = self._handlers.get(info.protocol)
            if handler is None:
                if info.enabled:
                    counts.unchecked[info.name] = counts.unchecked.get(info.name, 0) + 1
                continue
            if info.settings is None:
                counts.stale[info.name] = counts.stale.get(info.name, 0) + 1
                continue
            row = self._merged.links[key]
            for problem in handler.identifier_problems(info, row["identifiers"]):
                self._merged.problems.append(Problem(label, problem.field, problem.message))
