"""What checking an import yields: the rows to write, merged with what is stored, and counts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from orchestrator.errors import Problem

__all__ = ["ImportCounts", "Merged"]


@dataclass(slots=True)
class ImportCounts:
    """Rows created and updated, per table."""

    sessions_created: int = 0
    sessions_updated: int = 0
    links_created: int = 0
    links_updated: int = 0
    #: Enabled providers with no enabled handler, and how many of their sessions came in.
    unchecked: dict[str, int] = field(default_factory=dict)
    #: Providers whose stored settings their handler now refuses, likewise.
    stale: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class Merged:
    """The rows an import will write, each as one-by-one upserts would leave it, and what
    stops it: ``problems`` (those found before, the input's own, come first)."""

    problems: list[Problem] = field(default_factory=list)
    counts: ImportCounts = field(default_factory=ImportCounts)
    #: IdP session rows by session id.
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Provider session rows by (session id, provider).
    links: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    #: IdP sessions stored before this import.
    stored: set[str] = field(default_factory=set)
    #: Provider sessions stored before this import.
    stored_keys: set[tuple[str, str]] = field(default_factory=set)
