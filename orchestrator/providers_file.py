"""Checking providers (a ``[[providers]]`` TOML file, or configs) before anything is stored.

Every problem of every provider is reported in one round, each naming its source (the file),
the provider and the field: the common fields, the protocol (a handler must serve it unless
the provider says ``enabled = false``) and the protocol's own settings, which its handler
checks even when a common field is wrong. Needs no database: ``providers load`` refuses a
bad file before it connects. The URLs the worker will send to (each handler's
``outgoing_urls``) meet the egress policy: a refused destination is a problem, a name that
does not resolve now a warning.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from orchestrator.egress import EgressPolicy
from orchestrator.egress_screen import Resolve, screen_urls
from orchestrator.errors import InputError, LogoutError, Problem
from orchestrator.validation import problems_from
from protocols import ProtocolHandler, available_protocols
from schemas import ProviderConfig
from schemas.hints import did_you_mean

__all__ = ["CheckedProviders", "check_providers", "parse_providers_toml", "read_providers_toml"]


@dataclass(frozen=True, slots=True)
class CheckedProviders:
    """Providers that passed every check, each with its settings as its handler parsed them
    (JSON data; unchecked for a disabled provider no handler serves), and the warnings."""

    providers: tuple[tuple[ProviderConfig, dict[str, Any]], ...]
    warnings: tuple[str, ...] = ()


def read_providers_toml(text: str, source: str = "providers file") -> list[dict[str, Any]]:
    """The ``[[providers]]`` tables of a TOML text; :class:`InputError` naming ``source``
    when it is no such file (syntax, nesting, unknown top-level keys)."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError([Problem(source, "", f"invalid TOML: {exc}")]) from exc
    except RecursionError as exc:
        raise InputError(
            [Problem(source, "", "invalid TOML: nested too deeply to read; flatten it")]
        ) from exc
    problems = [
        Problem(source, key, "unknown top-level key" + did_you_mean(key, ["providers"]))
        for key in sorted(set(document) - {"providers"})
    ]
    tables = document.get("providers", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        problems.append(Problem(source, "providers", "must be an array of tables [[providers]]"))
    if problems:
        raise InputError(problems)
    return list(tables)


def parse_providers_toml(text: str, source: str = "providers file") -> list[ProviderConfig]:
    """Read ``[[providers]]`` tables (common fields only); raise :class:`InputError`."""
    configs: list[ProviderConfig] = []
    problems: list[Problem] = []
    for where, table in _labelled(read_providers_toml(text, source), source):
        try:
            configs.append(ProviderConfig.model_validate(table))
        except ValidationError as exc:
            problems.extend(problems_from(exc, where, models=ProviderConfig))
    if problems:
        raise InputError(problems)
    return configs


def _labelled(
    tables: Sequence[Mapping[str, Any]], source: str
) -> list[tuple[str, Mapping[str, Any]]]:
    """Each table with its label in errors: ``p.toml: provider 'wiki'`` (or ``#3``)."""
    labelled = []
    prefix = f"{source}: " if source else ""
    for index, table in enumerate(tables, start=1):
        name = table.get("name")
        label = f"provider {name!r}" if isinstance(name, str) else f"provider #{index}"
        labelled.append((prefix + label, table))
    return labelled


def check_providers(
    tables: Sequence[Mapping[str, Any]],
    handlers: Mapping[str, ProtocolHandler],
    source: str = "",
    *,
    egress_allow: Sequence[str] = (),
    resolve: Resolve | None = None,
) -> CheckedProviders:
    """Check every provider table; :class:`InputError` with every problem of every one.

    The URLs the worker will send to are checked against the egress policy with
    ``egress_allow`` (the setting); ``resolve`` looks up their host names (default: the
    system resolver).
    """
    policy = EgressPolicy.from_entries(egress_allow)
    found = _Findings()
    for where, table in _labelled(tables, source):
        _check_provider(where, table, handlers, policy, found)
    egress_problems, egress_warnings = _egress(found.outgoing, resolve)
    problems = [*found.problems, *egress_problems]
    if problems:
        raise InputError(problems)
    return CheckedProviders(tuple(found.checked), (*found.warnings, *egress_warnings))


@dataclass
class _Findings:
    """What checking the provider tables found so far, in file order."""

    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: (where, field, URL, policy) of each URL the worker will send to.
    outgoing: list[tuple[str, str, str, EgressPolicy]] = field(default_factory=list)
    checked: list[tuple[ProviderConfig, dict[str, Any]]] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)


def _check_provider(
    where: str,
    table: Mapping[str, Any],
    handlers: Mapping[str, ProtocolHandler],
    policy: EgressPolicy,
    found: _Findings,
) -> None:
    """One provider table: its common fields, its name once in the file, its protocol's
    settings (checked even when a common field is wrong)."""
    try:
        config: ProviderConfig | None = ProviderConfig.model_validate(table)
    except ValidationError as exc:
        found.problems.extend(problems_from(exc, where, models=ProviderConfig))
        config = None
    name, protocol = table.get("name"), table.get("protocol")
    if isinstance(name, str):
        if name in found.seen:
            found.problems.append(Problem(where, "name", "appears more than once in the file"))
        found.seen.add(name)
    if not isinstance(protocol, str):
        return  # refused above
    settings = _protocol_settings(where, table, protocol, handlers, policy, found)
    if config is not None and settings is not None:
        found.checked.append((config, settings))


def _protocol_settings(
    where: str,
    table: Mapping[str, Any],
    protocol: str,
    handlers: Mapping[str, ProtocolHandler],
    policy: EgressPolicy,
    found: _Findings,
) -> dict[str, Any] | None:
    """The provider's own settings as its handler parsed them (JSON data), or as given for
    a disabled provider no handler serves; None when refused."""
    own = {k: v for k, v in table.items() if k not in ProviderConfig.model_fields}
    handler = handlers.get(protocol)
    if handler is None and table.get("enabled", True) is not False:
        found.problems.append(_unserved(where, protocol, handlers))
        return None
    if handler is None:
        found.warnings.append(
            f"{where}: no handler for protocol {protocol!r} is enabled; stored disabled, "
            "its settings unchecked"
        )
        return own
    try:
        parsed = handler.validate_settings(str(table.get("name")), own)
    except InputError as exc:
        found.problems.extend(Problem(where, p.field, p.message) for p in exc.problems)
        return None
    found.outgoing.extend(
        (where, setting, url, policy) for setting, url in handler.outgoing_urls(parsed).items()
    )
    return _jsonable(parsed)


def _egress(
    outgoing: Sequence[tuple[str, str, str, EgressPolicy]], resolve: Resolve | None
) -> tuple[list[Problem], list[str]]:
    """The egress policy on every URL the worker will send to: problems and warnings."""
    problems: list[Problem] = []
    warnings: list[str] = []
    for policy in dict.fromkeys(policy for *_, policy in outgoing):
        mine = [(where, setting, url) for where, setting, url, p in outgoing if p == policy]
        found = screen_urls(policy, [url for *_, url in mine], resolve=resolve)
        for (where, setting, _), screening in zip(mine, found, strict=True):
            if screening.refusal is not None:
                problems.append(Problem(where, setting, screening.refusal))
            if screening.warning is not None:
                warnings.append(f"{where}: {setting}: {screening.warning}")
    return problems, warnings


def _unserved(where: str, protocol: str, handlers: Mapping[str, ProtocolHandler]) -> Problem:
    """Why ``protocol`` cannot serve a provider: not installed, or not enabled."""
    enabled = ", ".join(sorted(handlers)) or "none"
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
        f"no installed handler serves {protocol!r}{did_you_mean(protocol, installed)}; "
        f"installed: {', '.join(installed) or 'none'} (fix the name, install the handler, "
        "or set enabled = false)",
    )


def _jsonable(value: Any) -> dict[str, Any]:
    """A handler's parsed settings as JSON data for the providers table."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")  # type: ignore[no-any-return]
    if isinstance(value, Mapping):
        return json.loads(json.dumps(dict(value), default=str))  # type: ignore[no-any-return]
    raise LogoutError(f"handler returned settings of unsupported type {type(value).__name__}")
