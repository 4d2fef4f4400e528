"""The session registry's write API: providers and sessions, as IdP components record them."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from orchestrator.binding import IpFacts
from orchestrator.errors import InputError, Problem
from orchestrator.importing import GeoipDatabases, Progress, SessionImport
from orchestrator.providers_file import (
    CheckedProviders,
    check_providers,
    parse_providers_toml,
    read_providers_toml,
)
from orchestrator.session_policy import SessionPolicy
from orchestrator.store import Database, Provider, utcnow
from orchestrator.validation import load_json, models_by_tag, problems_from
from protocols import ProtocolHandler
from schemas import (
    ProviderConfig,
    ProviderSessionRecord,
    RegistryRecord,
    SessionRecord,
    registry_record_adapter,
)

__all__ = [
    "FactsLookup",
    "GeoipDatabases",
    "ImportSummary",
    "Progress",
    "SessionRegistry",
    "parse_providers_toml",
    "write_providers",
]

#: Lines between two progress reports while validating.
_REPORT_EVERY = 1000
#: Each record kind's model, for "did you mean" on an unknown field.
_RECORD_MODELS = models_by_tag(RegistryRecord, "kind")


def _line_number(problem: Problem) -> int:
    """For sorting: the number of a ``line N`` problem (others last, in their order)."""
    number = problem.where.removeprefix("line ")
    return int(number) if number.isdigit() else 1 << 62


@dataclass(frozen=True, slots=True)
class ImportSummary:
    """What a load or import changed: ``created``/``updated`` count every row; of them,
    ``sessions_created``/``sessions_updated`` IdP sessions (the rest provider sessions)."""

    created: int
    updated: int
    warnings: tuple[str, ...] = ()
    sessions_created: int = 0
    sessions_updated: int = 0

    @property
    def provider_sessions_created(self) -> int:
        return self.created - self.sessions_created

    @property
    def provider_sessions_updated(self) -> int:
        return self.updated - self.sessions_updated


def write_providers(db: Session, checked: CheckedProviders) -> ImportSummary:
    """Upsert providers :func:`check_providers` passed, in the caller's transaction ``db``."""
    created = updated = 0
    for config, settings in checked.providers:
        row = db.get(Provider, config.name)
        if row is None:
            row = Provider(name=config.name)
            db.add(row)
            created += 1
        else:
            updated += 1
        row.protocol = config.protocol
        row.enabled = config.enabled
        row.full_logout_on_rp_initiated = config.full_logout_on_rp_initiated
        row.settings = settings
        row.updated_at = utcnow()
    return ImportSummary(created, updated, checked.warnings)


#: Looks an address up for a session's binding; None when no GeoIP database is configured.
FactsLookup = Callable[[str], IpFacts]


class SessionRegistry:
    """Write and read providers and sessions. Every method is one transaction.

    New sessions get their absolute deadline from ``policy`` unless the record gives one;
    a bound session (``network_binding``/``geoip_binding``) whose record carries no login
    facts gets them from ``lookup`` (the GeoIP databases) when there is one. A binding mode
    whose database is not configured (``databases``) is refused: it could never be checked.
    """

    def __init__(
        self,
        database: Database,
        handlers: Mapping[str, ProtocolHandler],
        policy: SessionPolicy | None = None,
        lookup: FactsLookup | None = None,
        databases: GeoipDatabases | None = None,
        egress_allow: Sequence[str] = (),
    ) -> None:
        self._database = database
        self._handlers = handlers
        self._egress_allow = tuple(egress_allow)
        self._policy = policy or SessionPolicy()
        self._lookup = lookup
        self._databases = databases or GeoipDatabases()

    # -- providers ---------------------------------------------------------------------

    def upsert_providers(self, configs: Sequence[ProviderConfig]) -> ImportSummary:
        """Validate every provider with its handler, then upsert all or none.

        A provider whose protocol no enabled handler serves is refused, unless it says
        ``enabled = false`` (stored unchecked, with a warning): its logouts could not be sent.
        """
        return self.store_providers(self.check_configs(configs))

    def check_configs(self, configs: Sequence[ProviderConfig]) -> CheckedProviders:
        """:func:`check_providers` on ``configs`` with this registry's handlers and egress
        policy; writes nothing (:meth:`write_providers` does, in the caller's transaction)."""
        tables = [config.model_dump() for config in configs]
        return check_providers(tables, self._handlers, egress_allow=self._egress_allow)

    def load_providers_file(self, text: str, source: str) -> ImportSummary:
        """``providers load``: parse, validate and upsert a TOML file as a whole; every
        problem is reported at once, each naming ``source``, the provider and the field."""
        tables = read_providers_toml(text, source)
        allow = self._egress_allow
        return self.store_providers(
            check_providers(tables, self._handlers, source, egress_allow=allow)
        )

    def store_providers(self, checked: CheckedProviders) -> ImportSummary:
        """Upsert providers :func:`check_providers` passed, in one transaction."""
        with self._database.begin() as db:
            return write_providers(db, checked)

    def unserved_providers(self) -> list[tuple[str, str]]:
        """``(name, protocol)`` of each enabled provider no enabled handler serves (stored
        before such providers were refused, or since the ``protocols`` setting changed)."""
        with self._database() as db:
            rows = db.execute(
                select(Provider.name, Provider.protocol)
                .where(Provider.enabled.is_(True))
                .order_by(Provider.name)
            ).all()
        return [(name, protocol) for name, protocol in rows if protocol not in self._handlers]

    # -- sessions ----------------------------------------------------------------------

    def record_session(
        self,
        session_id: str,
        user_id: str,
        *,
        ip: str | None = None,
        user_agent: str | None = None,
        created: datetime | None = None,
        expires: datetime | None = None,
        **extra: Any,
    ) -> None:
        """Record (or update) an IdP session; ``extra``: the other :class:`SessionRecord`
        fields (``remember_me``, ``network_binding``, ...)."""
        values = {
            "ip": ip,
            "user_agent": user_agent,
            "created": created,
            "expires": expires,
            **extra,
        }
        try:
            record = SessionRecord(
                kind="session",
                session_id=session_id,
                user_id=user_id,
                **{k: v for k, v in values.items() if v is not None},
            )
        except ValidationError as exc:
            raise InputError(problems_from(exc, f"session {session_id!r}")) from exc
        self.import_records([record])

    def record_provider_session(
        self,
        session_id: str,
        provider: str,
        identifiers: Mapping[str, str] | None = None,
        **ids: str | None,
    ) -> None:
        """Record (or update) a provider session with its protocol's ``identifiers`` (OIDC's
        and SAML's may also be given as keywords: ``sid``, ``sub``, ``name_id``, ...)."""
        given = {name: value for name, value in ids.items() if value is not None}
        try:
            record = ProviderSessionRecord(
                kind="provider_session",
                session_id=session_id,
                provider=provider,
                identifiers=dict(identifiers or {}),
                **given,
            )
        except ValidationError as exc:
            raise InputError(
                problems_from(exc, f"provider session {session_id}/{provider}")
            ) from exc
        self.import_records([record])

    def import_lines(self, lines: Iterable[str], progress: Progress | None = None) -> ImportSummary:
        """``sessions import``: JSON lines with a ``kind`` field; all or nothing.

        ``progress(stage, done, total)`` is told how far validating and writing got. Every
        problem of the file is reported in one round, in line order: a line's own (JSON,
        fields) and those the valid lines have against the database (references, bindings,
        the handlers' checks).
        """
        text = lines if isinstance(lines, Sequence) else list(lines)
        records: list[SessionRecord | ProviderSessionRecord] = []
        labels: list[str] = []
        problems: list[Problem] = []
        refused_sessions: set[str] = set()  # of invalid lines: not "no such IdP session"
        total = len(text)
        for number, line in enumerate(text, start=1):
            if progress is not None and number % _REPORT_EVERY == 0:
                progress("validating", number, total)
            if not line.strip():
                continue
            where = f"line {number}"
            try:
                raw = load_json(line, where)
                records.append(registry_record_adapter.validate_python(raw))
                labels.append(where)
            except InputError as exc:
                problems.extend(exc.problems)
            except ValidationError as exc:
                problems.extend(problems_from(exc, where, tagged=True, models=_RECORD_MODELS))
                if isinstance(raw, dict) and isinstance(raw.get("session_id"), str):
                    refused_sessions.add(raw["session_id"])
        if progress is not None:
            progress("validating", total, total)
        try:
            return self.import_records(
                records, labels, progress, refused=problems, refused_sessions=refused_sessions
            )
        except InputError as exc:
            raise InputError(sorted(exc.problems, key=_line_number)) from exc

    def import_records(
        self,
        records: Sequence[SessionRecord | ProviderSessionRecord],
        labels: Sequence[str] | None = None,
        progress: Progress | None = None,
        *,
        refused: Sequence[Problem] = (),
        refused_sessions: Collection[str] = (),
    ) -> ImportSummary:
        """Upsert sessions and provider sessions in one transaction, after checking them all:
        binding modes against the configured GeoIP databases, references, and each provider
        session's identifiers with its protocol handler (see :mod:`orchestrator.importing`).

        ``labels`` name each record in errors (``line 3``); by default its identifiers.
        ``refused``: problems already found in the same input (nothing is written then, but
        the records are still checked, so all are reported at once); ``refused_sessions``:
        IdP sessions of refused records, which provider sessions may name.
        """
        where = dict(zip(map(id, records), labels, strict=True)) if labels else {}
        sessions = [r for r in records if isinstance(r, SessionRecord)]
        links = [r for r in records if isinstance(r, ProviderSessionRecord)]
        batch = SessionImport(
            self._handlers,
            self._policy,
            self._lookup,
            self._databases,
            progress,
            refused=refused,
            refused_sessions=refused_sessions,
        )
        with self._database.begin() as db:
            conn = db.connection()
            batch.check(conn, sessions, links, where)
            batch.write(conn)
        counts = batch.counts
        warnings = tuple(
            f"provider {name!r}: no handler for its protocol is enabled; {count} provider "
            "session(s) stored unchecked, and its logouts are skipped"
            for name, count in sorted(counts.unchecked.items())
        ) + tuple(
            f"provider {name!r}: its stored settings no longer pass its handler's checks; "
            f"{count} provider session(s) stored unchecked, and its logouts are skipped until "
            "the providers file is loaded again"
            for name, count in sorted(counts.stale.items())
        )
        return ImportSummary(
            created=counts.sessions_created + counts.links_created,
            updated=counts.sessions_updated + counts.links_updated,
            warnings=warnings,
            sessions_created=counts.sessions_created,
            sessions_updated=counts.sessions_updated,
        )
