"""``logout-orchestrator audit list``: stream the trail as JSON lines or show a page as a table.

``--json`` without ``--limit`` streams every matching record in keyset pages (constant memory);
otherwise one page is read, and when the limit cut it, stderr says so and how to get the rest.
It reads through SQLAlchemy Core and prints plain text: no ORM, logging or rich to load
(``tests/unit/test_startup.py`` pins that).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace

import click

from orchestrator.audit_query import (
    AuditPage,
    AuditQuery,
    iter_audit,
    parse_timestamp,
    read_audit_page,
    resolve_event_id,
)
from orchestrator.errors import InputError
from orchestrator.settings import Settings
from orchestrator.store.reading import reading_engine
from workers.cli.base import write_lines
from workers.tables import audit_table

__all__ = ["TABLE_LIMIT", "AuditListOptions", "list_audit"]

#: Records the table shows when no --limit is given.
TABLE_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class AuditListOptions:
    """The command's options as given (text, not yet checked)."""

    user_id: str | None = None
    session_id: str | None = None
    event: str | None = None
    record_type: str | None = None
    since: str | None = None
    limit: int | None = None
    after: str | None = None
    as_json: bool = False


def _bad_parameter(exc: InputError) -> click.BadParameter:
    """Our refusal as click's: 'Invalid value for --type: ...' and exit status 2."""
    fields = dict.fromkeys(f"'--{problem.field}'" for problem in exc.problems)
    message = "; ".join(problem.message for problem in exc.problems)
    return click.BadParameter(message, param_hint=" / ".join(fields))


def list_audit(settings: Settings, options: AuditListOptions) -> None:
    """Print the records ``options`` select on standard output (the cut note on standard
    error); bad input is a :class:`click.BadParameter`."""
    try:
        since = parse_timestamp(options.since) if options.since is not None else None
        stream = options.as_json and options.limit is None
        limit = options.limit if options.limit is not None else TABLE_LIMIT
        query = AuditQuery(
            user_id=options.user_id,
            session_id=options.session_id,
            type=options.record_type,
            since=since,
            limit=None if stream else limit,
            after=options.after,
        )
    except InputError as exc:
        raise _bad_parameter(exc) from None
    engine = reading_engine(
        settings.effective_database_url, settings.origin("database_url")
    )  # never migrates
    try:
        with engine.connect() as db:
            try:
                if options.event is not None:
                    event_id = resolve_event_id(db, options.event)
                    query = replace(query, event_id=event_id)
                if stream:
                    write_lines(record.model_dump_json() for record in iter_audit(db, query))
                    return
                page = read_audit_page(db, query)
            except InputError as exc:
                raise _bad_parameter(exc) from None
    finally:
        engine.dispose()
    if options.as_json:
        write_lines(record.model_dump_json() for record in page.records)
    else:
        write_lines(audit_table(page.records))
    if page.cut:
        sys.stderr.write(_cut_note(page, options) + "\n")


def _cut_note(page: AuditPage, options: AuditListOptions) -> str:
    shown, total = len(page.records), page.total
    if not page.latest:
        last = page.records[-1].id
        return (
            f"showing the first {shown:,} of {total:,} after {options.after}; "
            f"continue with --after {last}"
        )
    if options.as_json:
        return f"showing the latest {shown:,} of {total:,}; --json without --limit gives them all"
    return f"showing the latest {shown:,} of {total:,}; use --limit or --json"
