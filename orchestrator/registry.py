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

from orchestrator.binding import BoundSession, InvalidAddressError, IpFacts
from orchestrator.errors import InputError, LogoutError, Problem
from orchestrator.session_policy import SessionPolicy
from orchestrator.store import IdpSession, Provider, ProviderSession, SessionFactory, utcnow
from orchestrator.validation import problems_from
from protocols import ProtocolHandler
from schemas import ProviderConfig, ProviderSessionRecord, SessionRecord, registry_record_adapter

__all__ = ["FactsLookup", "ImportSummary", "SessionRegistry", "parse_providers_toml"]


@dataclass(frozen=True, slots=True)
class ImportSummary:
    """What a load or import changed."""

    created: int
    updated: int
    warnings: tuple[str, ...] = ()


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

_BOUND_FACTS = ("asn", "as_network", "continent", "country", "city")


class SessionRegistry:
    """Write and read providers and sessions. Every method is one transaction.

    New sessions get their absolute deadline from ``policy`` unless the record gives one;
    a bound session (``network_binding``/``geoip_binding``) whose record carries no login
    facts gets them from ``lookup`` (the GeoIP databases) when there is one.
    """

    def __init__(
        self,
        sessions: SessionFactory,
        handlers: Mapping[str, ProtocolHandler],
        policy: SessionPolicy | None = None,
        lookup: FactsLookup | None = None,
    ) -> None:
        self._sessions = sessions
        self._handlers = handlers
        self._policy = policy or SessionPolicy()
        self._lookup = lookup

    # -- providers ---------------------------------------------------------------------

    def upsert_providers(self, configs: Sequence[ProviderConfig]) -> ImportSummary:
        """Validate every provider with its handler, then upsert all or none."""
        problems: list[Problem] = []
        warnings: list[str] = []
        validated: list[tuple[ProviderConfig, dict[str, Any]]] = []
        for config in configs:
            handler = self._handlers.get(config.protocol)
            settings = config.protocol_settings
            if handler is None:
                warnings.append(
                    f"provider {config.name!r}: no handler for protocol {config.protocol!r} is "
                    "enabled; its settings are stored unchecked and its logouts are skipped"
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

    def load_providers_file(self, text: str, source: str) -> ImportSummary:
        """``providers load``: parse, validate and upsert a TOML file as a whole."""
        return self.upsert_providers(parse_providers_toml(text, source))

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

    def import_lines(self, lines: Iterable[str]) -> ImportSummary:
        """``sessions import``: JSON lines with a ``kind`` field; all or nothing."""
        records: list[SessionRecord | ProviderSessionRecord] = []
        labels: list[str] = []
        problems: list[Problem] = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                records.append(registry_record_adapter.validate_json(line))
                labels.append(f"line {number}")
            except ValidationError as exc:
                problems.extend(problems_from(exc, f"line {number}", tagged=True))
        if problems:
            raise InputError(problems)
        return self.import_records(records, labels)

    def import_records(
        self,
        records: Sequence[SessionRecord | ProviderSessionRecord],
        labels: Sequence[str] | None = None,
    ) -> ImportSummary:
        """Upsert sessions and provider sessions in one transaction, after checking references.

        ``labels`` name each record in errors (``line 3``); by default its identifiers.
        """
        where = dict(zip(map(id, records), labels, strict=True)) if labels else {}
        sessions = [r for r in records if isinstance(r, SessionRecord)]
        links = [r for r in records if isinstance(r, ProviderSessionRecord)]
        created = updated = 0
        with self._sessions.begin() as db:
            self._check_references(db, sessions, links, where)
            for rec in sessions:
                row = db.get(IdpSession, rec.session_id)
                given = rec.model_fields_set
                if row is None:
                    now = utcnow()
                    started = rec.created or now
                    row = IdpSession(
                        session_id=rec.session_id,
                        user_id=rec.user_id,
                        created_at=started,
                        last_seen=rec.last_seen or started,
                        expires_at=self._policy.expires_at(
                            started,
                            remember_me=rec.remember_me,
                            stay_signed_in=rec.stay_signed_in,
                        ),
                        remember_me=rec.remember_me,
                        stay_signed_in=rec.stay_signed_in,
                        network_binding=rec.network_binding,
                        geoip_binding=rec.geoip_binding,
                    )
                    db.add(row)
                    created += 1
                    self._record_facts(row, rec, where.get(id(rec)))
                else:
                    if row.user_id != rec.user_id:
                        raise InputError(
                            [
                                Problem(
                                    where.get(id(rec), f"session {rec.session_id!r}"),
                                    "user_id",
                                    f"belongs to user {row.user_id!r}; a session never moves",
                                )
                            ]
                        )
                    updated += 1
                    if rec.last_seen is not None:
                        row.last_seen = rec.last_seen
                    for name in ("remember_me", "stay_signed_in", "network_binding"):
                        if name in given:
                            setattr(row, name, getattr(rec, name))
                    if "geoip_binding" in given:
                        row.geoip_binding = rec.geoip_binding
                    if given & {"ip", "network_binding", "geoip_binding", *_BOUND_FACTS}:
                        self._record_facts(row, rec, where.get(id(rec)))
                row.expires_at = rec.expires or row.expires_at
                row.ip = rec.ip or row.ip
                row.user_agent = rec.user_agent or row.user_agent
            db.flush()
            for link in links:
                existing = db.scalar(
                    select(ProviderSession).where(
                        ProviderSession.session_id == link.session_id,
                        ProviderSession.provider == link.provider,
                    )
                )
                fields = link.model_dump(exclude={"kind", "session_id", "provider", "created"})
                if existing is None:
                    db.add(
                        ProviderSession(
                            session_id=link.session_id,
                            provider=link.provider,
                            created_at=link.created or utcnow(),
                            **fields,
                        )
                    )
                    created += 1
                else:
                    for key, value in fields.items():
                        if value is not None:
                            setattr(existing, key, value)
                    updated += 1
        return ImportSummary(created, updated)

    def _record_facts(self, row: IdpSession, rec: SessionRecord, label: str | None) -> None:
        """The login address's facts a binding compares with: given, or looked up."""
        given = {name: getattr(rec, name) for name in _BOUND_FACTS}
        if any(value is not None for value in given.values()):
            for name, value in given.items():
                setattr(row, name, value)
            return
        bound = row.network_binding != "no_binding" or row.geoip_binding != "no_binding"
        address = rec.ip or row.ip
        if not bound or address is None or self._lookup is None:
            return
        try:
            facts = self._lookup(address)
        except InvalidAddressError as exc:
            where = label or f"session {rec.session_id!r}"
            raise InputError([Problem(where, "ip", str(exc))]) from exc
        login = BoundSession.at_login(rec.session_id, facts)
        for name in _BOUND_FACTS:
            setattr(row, name, getattr(login, name))

    @staticmethod
    def _check_references(
        db: Any,
        sessions: Sequence[SessionRecord],
        links: Sequence[ProviderSessionRecord],
        labels: Mapping[int, str],
    ) -> None:
        problems: list[Problem] = []
        providers = set(db.scalars(select(Provider.name)))
        known = {s.session_id for s in sessions}
        wanted = {link.session_id for link in links} - known
        if wanted:
            known |= set(
                db.scalars(select(IdpSession.session_id).where(IdpSession.session_id.in_(wanted)))
            )
        for link in links:
            where = labels.get(id(link), f"provider session {link.session_id}/{link.provider}")
            if link.provider not in providers:
                problems.append(Problem(where, "provider", "no such provider (load it first)"))
            if link.session_id not in known:
                problems.append(Problem(where, "session_id", "no such IdP session"))
        if problems:
            raise InputError(problems)


def _jsonable(value: Any) -> dict[str, Any]:
    """A handler's parsed settings as JSON data for the providers table."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")  # type: ignore[no-any-return]
    if isinstance(value, Mapping):
        return json.loads(json.dumps(dict(value), default=str))  # type: ignore[no-any-return]
    raise LogoutError(f"handler returned settings of unsupported type {type(value).__name__}")
