"""Readable tables for the command line."""

from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table

from schemas import AuditRecord

__all__ = ["print_audit_table"]


def print_audit_table(records: list[AuditRecord], out: Console) -> None:
    """Audit records as a readable table, one line each."""
    table = Table(show_lines=False, box=None, pad_edge=False)
    for column in ("at", "type", "outcome", "user", "session", "provider", "event", "detail"):
        table.add_column(column, overflow="fold")
    for r in records:
        detail = {k: v for k, v in r.detail.items() if k not in ("delivery_id", "message_id")}
        table.add_row(
            r.at.strftime("%Y-%m-%d %H:%M:%S"),
            r.type.value,
            r.outcome,
            r.user_id or "",
            r.session_id or "",
            r.provider or "",
            (r.event_id or "")[:8],
            json.dumps(detail, separators=(",", ":"), default=str),
        )
    out.print(table)
