"""Readable tables for the command line: aligned plain text, one line per row.

Plain text (no rich): ``audit list`` prints its table without loading a rendering library, and
a cell can hold no markup or terminal control sequence (those are shown escaped).
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Sequence
from typing import IO

from schemas.audit import AuditRecord

__all__ = ["AUDIT_COLUMNS", "audit_table", "format_table", "print_audit_table"]

AUDIT_COLUMNS = ("at", "type", "outcome", "user", "session", "provider", "event", "detail")
_GAP = "  "


def _cell(text: str) -> str:
    """``text`` with control characters (C0, DEL, C1) escaped as ``\\xNN``."""
    if text.isprintable():
        return text
    return "".join(
        f"\\x{ord(char):02x}" if unicodedata.category(char) == "Cc" else char for char in text
    )


def _width(text: str) -> int:
    """Terminal columns ``text`` takes: wide (East Asian) characters take two."""
    if text.isascii():
        return len(text)
    return sum(2 if unicodedata.east_asian_width(char) in "WF" else 1 for char in text)


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """The lines of a table: each column as wide as its widest cell, two spaces apart."""
    cells = [[_cell(value) for value in row] for row in [header, *rows]]
    widths = [max(_width(row[i]) for row in cells) for i in range(len(header))]
    return [
        _GAP.join(value + " " * (widths[i] - _width(value)) for i, value in enumerate(row)).rstrip()
        for row in cells
    ]


def audit_table(records: Sequence[AuditRecord]) -> list[str]:
    """Audit records as the lines of a readable table (a header, then one line each)."""
    rows = []
    for r in records:
        detail = {k: v for k, v in r.detail.items() if k not in ("delivery_id", "message_id")}
        rows.append(
            (
                r.at.strftime("%Y-%m-%d %H:%M:%S"),
                r.type.value,
                r.outcome,
                r.user_id or "",
                r.session_id or "",
                r.provider or "",
                (r.event_id or "")[:8],
                json.dumps(detail, separators=(",", ":"), default=str),
            )
        )
    return format_table(AUDIT_COLUMNS, rows)


def print_audit_table(records: Sequence[AuditRecord], out: IO[str]) -> None:
    """Audit records as a readable table on ``out``."""
    out.write("".join(line + "\n" for line in audit_table(records)))
