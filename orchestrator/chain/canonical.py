"""The canonical form of an audit record and the chain's two hashes, defined once.

An auditor recomputes both offline from an export (``docs/chain.md``, *Verifying offline*):

- ``record_hash`` = SHA-256 of the record's canonical form: the JSON object of its ten
  fields (:data:`CANONICAL_FIELDS`) with keys sorted, no whitespace (``","`` and ``":"``),
  non-ASCII characters as themselves, UTF-8 encoded; ``at`` as UTC
  ``YYYY-MM-DDTHH:MM:SS.ffffffZ``; an absent value is ``null``.
- ``chain_hash`` = SHA-256 of the ASCII text ``prev_hash + record_hash`` (two lower-case
  hex digests, 128 characters), where ``prev_hash`` is the chain hash of the record before
  it, :data:`GENESIS` for the first record ever written.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

__all__ = [
    "CANONICAL_FIELDS",
    "GENESIS",
    "canonical_form",
    "chain_hash",
    "format_at",
    "record_hash",
]

#: The fields a record's hash covers (``key``: its dedupe key).
CANONICAL_FIELDS: Final = (
    "at",
    "detail",
    "event_id",
    "id",
    "key",
    "outcome",
    "provider",
    "session_id",
    "type",
    "user_id",
)
#: The ``prev_hash`` of the first record of the chain.
GENESIS: Final = "0" * 64


def format_at(at: datetime) -> str:
    """A timestamp as the canonical form writes it: UTC, microseconds, ``Z``."""
    # isoformat is about twice as fast as strftime; in UTC it always ends in +00:00
    return at.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def canonical_form(fields: Mapping[str, Any]) -> bytes:
    """The bytes a record's hash is taken of; ``fields`` holds :data:`CANONICAL_FIELDS`
    (``at`` a datetime or its canonical text, ``detail`` a JSON object or its text)."""
    at = fields["at"]
    detail = fields["detail"]
    document = {name: fields.get(name) for name in CANONICAL_FIELDS}
    document["at"] = format_at(at) if isinstance(at, datetime) else at
    document["detail"] = json.loads(detail) if isinstance(detail, str) else detail
    text = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8")


def record_hash(fields: Mapping[str, Any]) -> str:
    """The SHA-256 (hex) of :func:`canonical_form`."""
    return hashlib.sha256(canonical_form(fields)).hexdigest()


def chain_hash(prev_hash: str, record: str) -> str:
    """The chain hash of a record whose ``record_hash`` is ``record``, after ``prev_hash``."""
    return hashlib.sha256((prev_hash + record).encode("ascii")).hexdigest()
