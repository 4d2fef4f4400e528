"""The session registry's write API: providers and sessions, as IdP components record them."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select

from orchestrator.binding import IpFacts
from orchestrator.errors import InputError, LogoutError, Problem
from orchestrator.importing import GeoipDatabases, Progress, SessionImport
from orchestrator.session_policy import SessionPolicy
from orchestrator.store import Provider, SessionFactory, utcnow
from orchestrator.validation import problems_from
from protocols import ProtocolHandler, available_protocols
from schemas import ProviderConfig, ProviderSessionRecord, SessionRecord, registry_record_adapter

__all__ = [
    "FactsLookup",
    "GeoipDatabases",
    "ImportSummary",
    "Progress",
    "SessionRegistry",
    "parse_providers_toml",
]

#: Lines between two progress reports while validating.
_REPORT_EVERY = 1000


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


def parse_providers_toml(text: str, source: str = "providers file") -> list[ProviderConfig]:
    """Read ``[[providers]]`` tables; raise :class:`InputError` naming provider and field."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError([Problem(source, "", f"invalid TOML: {exc}")]) from exc
    unknown = sorted(set(document) - {"providers"})
    if unknown:
        raise InputError([Problem(source, key, "unknown top-level key") for key in unknown])
    tables = document.get("providers", [])
    if not isinstance(tables, list):
        raise InputError([Problem(source, "providers", "must be an array of tables")])
    problems: list[Problem] = []
    configs: list[ProviderConfig] = []
    seen: set[str] = set()
    for index, table in enumerate(tables, start=1):
        label = table.get("name") if isinstance(table, dict) else None
        where = f"provider {label!r}" if isinstance(label, str) else f"provider #{index}"
        try:
            config = ProviderConfig.model_validate(table)
        except ValidationError as exc:
            problems.extend(problems_from(exc, where))
            continue
        if config.name in seen:
            problems.append(Problem(where, "name", "appears more than once in the file"))
        seen.add(config.name)
        configs.append(config)
    if problems:
        raise InputError(problems)
    return configs


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
        sessions: SessionFactory,
        handlers: Mapping[str, ProtocolHandler],
        policy: SessionPolicy | None = None,
        lookup: FactsLookup | None = None,
        databases: GeoipDatabases | None = None,
    ) -> None:
        self._sessions = sessions
        self._handlers = handlers
        self._policy = policy or SessionPolicy()
        self._lookup = lookup
        self._databases = databases or GeoipDatabases()

    # -- providers ---------------------------------------------------------------------

    def upsert_providers(self, configs: Sequence[ProviderConfig]) -> ImportSummary:
        """Validate every provider with its handler, then upsert all or none.

        A provider whose protocol no enabled handler serves is refused, unless it says
        ``enabled = false`` (stored unchecked, with a warning): its logouts could not be sent.
        """
        problems: list[Problem] = []
        warnings: list[str] = []
        validated: list[tuple[ProviderConfig, dict[str, Any]]] = []
        for config in configs:
            handler = self._handlers.get(config.protocol)
            settings = config.protocol_settings
            if handler is None and config.enabled:
                problems.append(self._unserved(config.name, config.protocol))
                continue
            if handler is None:
                warnings.append(
                    f"provider {config.name!r}: no handler for protocol {config.protocol!r} is "
                    "enabled; stored disabled, its settings unchecked"
                )
            else:
                try:
                    parsed = handler.validate_settings(config.name, settings)
                except InputError as exc:
                    problems.extend(exc.problems)
                    continue
                settings = _jsonable(parsed)
            validated.append((config, settings))
        if problems:
            raise InputError(problems)
        created = updated = 0
        with self._sessions.begin() as db:
            for config, settings in validated:
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
        return ImportSummary(created, updated, tuple(warnings))

    def _unserved(self, provider: str, protocol: str) -> Problem:
        """Why ``protocol`` cannot serve ``provider``: not installed, or not enabled."""
        where = f"provider {provider!r}"
        enabled = ", ".join(sorted(self._handlers)) or "none"
        installed = available_protocols()
        if protocol in installed:
            return Problem(
                where,
                "protocol",
                f"the {protocol!r} handler is installed but not enabled by the protocols "
                f"setting (enabled: {enabled}); add it to protocols, or set enabled = false",
            )
        return Problem(
            where,
            "protocol",
            f"no installed handler serves {protocol!r}; installed: "
            f"{', '.join(installed) or 'none'} (fix the name, install the handler, or set "
            "enabled = false)",
        )

    def load_providers_file(self, text: str, source: str) -> ImportSummary:
        """``providers load``: parse, validate and upsert a TOML file as a whole."""
        return self.upsert_providers(parse_providers_toml(text, source))

    def unserved_providers(self) -> list[tuple[str, str]]:
        """``(name, protocol)`` of each enabled provider no enabled handler serves (stored
        before such providers were refused, or since the ``protocols`` setting changed)."""
        with self._sessions() as db:
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

    def record_provider_session(self, session_id: str, provider: str, **ids: str | None) -> None:
        """Record (or update) a provider session: ``sid``, ``sub``, ``name_id``, ..."""
        try:
            record = ProviderSessionRecord(
                kind="provider_session", session_id=session_id, provider=provider, **ids
            )
        except ValidationError as exc:
            raise InputError(
                problems_from(exc, f"provider session {session_id}/{provider}")
            ) from exc
        self.import_records([record])

    def import_lines(self, lines: Iterable[str], progress: Progress | None = None) -> ImportSummary:
        """``sessions import``: JSON lines with a ``kind`` field; all or nothing.

        ``progress(stage, done, total)`` is told how far validating and writing got.
        """
        text = lines if isinstance(lines, Sequence) else list(lines)
        records: list[SessionRecord | ProviderSessionRecord] = []
        labels: list[str] = []
        problems: list[Problem] = []
        total = len(text)
        for number, line in enumerate(text, start=1):
            if progress is not None and number % _REPORT_EVERY == 0:
                progress("validating", number, total)
            if not line.strip():
                continue
            try:
                records.append(registry_record_adapter.validate_json(line))
                labels.append(f"line {number}")
            except ValidationError as exc:
                problems.extend(problems_from(exc, f"line {number}", tagged=True))
        if progress is not None:
            progress("validating", total, total)
        if problems:
            raise InputError(problems)
        return self.import_records(records, labels, progress)

    def import_records(
        self,
        records: Sequence[SessionRecord | ProviderSessionRecord],
        labels: Sequence[str] | None = None,
        progress: Progress | None = None,
    ) -> ImportSummary:
        """Upsert sessions and provider sessions in one transaction, after checking them all:
        binding modes against the configured GeoIP databases, references, and each provider
        session's identifiers with its protocol handler (see :mod:`orchestrator.importing`).

        ``labels`` name each record in errors (``line 3``); by default its identifiers.
        """
        where = dict(zip(map(id, records), labels, strict=True)) if labels else {}
        sessions = [r for r in records if isinstance(r, SessionRecord)]
        links = [r for r in records if isinstance(r, ProviderSessionRecord)]
        batch = SessionImport(self._handlers, self._policy, self._lookup, self._databases, progress)
        with self._sessions.begin() as db:
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


def _jsonable(value: Any) -> dict[str, Any]:
    """A handler's parsed settings as JSON data for the providers table."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")  # type: ignore[no-any-return]
    if isinstance(value, Mapping):
        return json.loads(json.dumps(dict(value), default=str))  # type: ignore[no-any-return]
    raise LogoutError(f"handler returned settings of unsupported type {type(value).__name__}")
