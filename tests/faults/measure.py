"""What a fault scenario measures: from the database, the broker and the relying parties.

Definitions (the README's *Fault campaign* table uses them):

* **completed**: a published event whose record is ``completed``, with one delivery per
  provider session it named, every one final, and its ``logout.settled`` written. A raw
  message counts as handled when it was rejected (``event.rejected``) or, carrying a valid
  event, that event completed.
* **lost**: published events not completed, plus raw messages not handled, at the deadline.
* **doubled**: POSTs a relying party got for a provider session beyond the first. Allowed
  (at-least-once) are one more per attempt recorded as a transient failure
  (``delivery.retrying``) and one more per fault the delivery was open at (created before
  it ended, not final before it began: a SIGKILLed worker, a database outage; a request
  sent but not recorded is sent again).
* **duplicated**: audit records stating a fact already recorded (same type and subject).
* **contradictory**: deliveries with two different final records, or whose row disagrees
  with its final record; ``logout.settled`` tallies that disagree with the delivery rows.
* **stranded**: broker messages never acknowledged after the drain (queued, prefetched,
  delayed or dead-lettered).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orchestrator.store import (
    TERMINAL_DELIVERY_STATUSES,
    AuditRow,
    Delivery,
    DeliveryStatus,
    EventRecord,
    ProviderSession,
    RejectedEvent,
)
from schemas import AuditType
from workers.demo_rps import Received

__all__ = ["Expected", "Figures", "count_stranded", "measure", "table"]

_FINAL_TYPES = {
    AuditType.DELIVERY_SUCCEEDED.value: DeliveryStatus.SUCCEEDED.value,
    AuditType.DELIVERY_FAILED.value: DeliveryStatus.FAILED.value,
    AuditType.DELIVERY_SKIPPED.value: DeliveryStatus.SKIPPED.value,
}
#: Records of one event each, of one IdP session each, of one raw message each.
_PER_EVENT = {
    AuditType.EVENT_RECEIVED.value,
    AuditType.LOGOUT_COMPLETED.value,
    AuditType.LOGOUT_SETTLED.value,
}
_EXAMPLES = 3


@dataclass(frozen=True, slots=True)
class Expected:
    """What the scenario published: valid events (id -> its provider sessions) and raw ones."""

    deliveries: Mapping[str, int]
    raw: int = 0
    #: Event ids carried by raw messages whose event is valid (handled or rejected alike).
    raw_event_ids: Collection[str] = ()


@dataclass(slots=True)
class Figures:
    """One scenario's results; see the module docstring for each definition."""

    scenario: str
    published: int
    completed: int
    rejected: int
    lost: int
    doubled: int
    doubled_allowed: int
    duplicated: int
    contradictory: int
    stranded: int
    #: Seconds from the end of the last fault until everything was handled; None: never.
    recovered_s: float | None
    refused_by_rp: int
    faults: list[str] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)

    @property
    def doubled_unexplained(self) -> int:
        return self.doubled - self.doubled_allowed

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "doubled_unexplained": self.doubled_unexplained}


_COLUMNS = (
    ("scenario", 36),
    ("published", 9),
    ("completed", 9),
    ("rejected", 8),
    ("lost", 5),
    ("doubled (allowed)", 17),
    ("duplicated", 10),
    ("contradictory", 13),
    ("stranded", 8),
    ("recovered in", 12),
)


def table(rows: Iterable[Figures]) -> list[str]:
    """The campaign's table, one line per scenario."""
    lines = ["  ".join(name.ljust(width) for name, width in _COLUMNS)]
    lines.append("  ".join("-" * width for _, width in _COLUMNS))
    for row in rows:
        recovered = "never" if row.recovered_s is None else f"{row.recovered_s:.1f} s"
        cells = (
            row.scenario,
            str(row.published),
            str(row.completed),
            str(row.rejected),
            str(row.lost),
            f"{row.doubled} ({row.doubled_allowed})",
            str(row.duplicated),
            str(row.contradictory),
            str(row.stranded),
            recovered,
        )
        lines.append(
            "  ".join(cell.ljust(width) for cell, (_, width) in zip(cells, _COLUMNS, strict=True))
        )
    return lines


#: The key of a pytest-xdist worker's campaign figures (JSON) in its ``workeroutput``.
WORKER_OUTPUT = "logout_fault_campaign"


def write_summary(
    reporter: pytest.TerminalReporter, variant: str, rows: Sequence[Figures], path: Path | str
) -> None:
    """The campaign's section of the terminal summary: its table, then each scenario's
    faults and examples, and where its figures are."""
    reporter.write_sep("=", f"fault campaign ({variant} variant)")
    for line in table(rows):
        reporter.write_line(line)
    for row in rows:
        for what in row.faults:
            reporter.write_line(f"{row.scenario}: {what}")
        for example in row.examples:
            reporter.write_line(f"{row.scenario}: e.g. {example}")
    reporter.write_line(f"figures (JSON): {path}")


def count_stranded(client: redis.Redis) -> int:
    """Messages the broker still holds: every ``*.msgs`` hash (queues, delay and dead-letter
    queues; a prefetched message stays in its queue's hash until acknowledged)."""
    return sum(int(client.hlen(key)) for key in client.scan_iter(match="*.msgs", count=1000))


def _key(received: Received) -> tuple[str, str] | None:
    claims = received.claims or {}
    subject = claims.get("sid") or claims.get("session_index")
    return (received.rp, str(subject)) if subject is not None else None


def measure(
    db: Session,
    scenario: str,
    expected: Expected,
    received: Sequence[Received],
    windows: Sequence[tuple[datetime, datetime]],
    stranded: int,
    recovered_s: float | None,
    faults: Sequence[str],
) -> Figures:
    """Read every figure of one scenario once its run has ended."""
    examples: list[str] = []
    rows = [
        (delivery, link)
        for delivery, link in db.execute(select(Delivery, ProviderSession).join(ProviderSession))
    ]
    records = list(db.scalars(select(AuditRow).order_by(AuditRow.seq)))
    statuses = {
        event_id: status
        for event_id, status in db.execute(select(EventRecord.event_id, EventRecord.status))
    }
    rejected_rows = int(db.scalar(select(func.count()).select_from(RejectedEvent)) or 0)

    by_event: dict[str, list[Delivery]] = defaultdict(list)
    for delivery, _ in rows:
        by_event[delivery.event_id].append(delivery)
    settled = {r.event_id for r in records if r.type == AuditType.LOGOUT_SETTLED.value}
    completed = sum(
        1
        for event_id, count in expected.deliveries.items()
        if statuses.get(event_id) == "completed"
        and event_id in settled
        and len(by_event[event_id]) == count
        and all(d.status in TERMINAL_DELIVERY_STATUSES for d in by_event[event_id])
    )
    rejected = sum(1 for r in records if r.type == AuditType.EVENT_REJECTED.value)
    raw_completed = sum(1 for e in expected.raw_event_ids if statuses.get(e) == "completed")
    handled_raw = rejected + raw_completed
    lost = (len(expected.deliveries) - completed) + max(0, expected.raw - handled_raw)

    duplicated = _duplicated(records, examples)
    if handled_raw > expected.raw:
        duplicated += handled_raw - expected.raw
        examples.append(f"{handled_raw} raw messages handled of {expected.raw} sent")
    if rejected_rows != rejected:
        examples.append(f"{rejected} event.rejected records but {rejected_rows} rejected_events")
    contradictory = _contradictory(rows, records, by_event, examples)

    posts = Counter(k for k in map(_key, received) if k is not None)
    refused = sum(1 for r in received if r.claims is None or r.error is not None)
    retried = Counter(
        str(r.detail.get("delivery_id"))
        for r in records
        if r.type == AuditType.DELIVERY_RETRYING.value
    )
    doubled = allowed = 0
    for delivery, link in rows:
        ids = link.identifiers
        subject = ids["sid"] if ids.get("sid") is not None else ids.get("session_index")
        extra = posts.get((delivery.provider, str(subject)), 0) - 1
        if extra <= 0:
            continue
        may = retried[delivery.id] + sum(1 for window in windows if _open_in(delivery, window))
        doubled += extra
        allowed += min(extra, may)
        if extra > may and len(examples) < 2 * _EXAMPLES:
            examples.append(
                f"delivery {delivery.id} ({delivery.provider} {subject}): {extra + 1} POSTs, "
                f"{retried[delivery.id]} transient failure(s) recorded"
            )
    return Figures(
        scenario=scenario,
        published=len(expected.deliveries) + expected.raw,
        completed=completed,
        rejected=rejected,
        lost=lost,
        doubled=doubled,
        doubled_allowed=allowed,
        duplicated=duplicated,
        contradictory=contradictory,
        stranded=stranded,
        recovered_s=recovered_s,
        refused_by_rp=refused,
        faults=list(faults),
        examples=examples,
    )


def _open_in(delivery: Delivery, window: tuple[datetime, datetime]) -> bool:
    """True when ``delivery`` existed and was not final yet at some time of ``window``."""
    began, ended = window
    done = delivery.completed_at
    return delivery.created_at <= ended and (done is None or done >= began)


def _fact(record: AuditRow) -> tuple[Any, ...] | None:
    """What a record states, as a key: two records with one key state one fact twice."""
    kind = record.type
    detail = record.detail or {}
    if kind in _PER_EVENT:
        return (kind, record.event_id)
    if kind == AuditType.SESSION_ENDED.value:
        return (kind, record.session_id)
    if kind in _FINAL_TYPES:
        return (kind, detail.get("delivery_id"))
    if kind == AuditType.DELIVERY_RETRYING.value:
        return (kind, detail.get("delivery_id"), detail.get("attempt"))
    if kind == AuditType.EVENT_REJECTED.value:
        return (kind, detail.get("message_id"))
    return None  # event.duplicate and the rest: one per message, plan or report


def _duplicated(records: Sequence[AuditRow], examples: list[str]) -> int:
    facts = Counter(f for f in map(_fact, records) if f is not None)
    doubled = [(fact, n) for fact, n in facts.items() if n > 1]
    examples.extend(f"audit fact {fact} written {n} times" for fact, n in doubled[:_EXAMPLES])
    return sum(n - 1 for _, n in doubled)


def _contradictory(
    rows: Sequence[tuple[Delivery, ProviderSession]],
    records: Sequence[AuditRow],
    by_event: Mapping[str, Sequence[Delivery]],
    examples: list[str],
) -> int:
    finals: dict[str, set[str]] = defaultdict(set)
    for record in records:
        if record.type in _FINAL_TYPES:
            finals[str((record.detail or {}).get("delivery_id"))].add(_FINAL_TYPES[record.type])
    found: list[str] = []
    for delivery, _ in rows:
        said = finals.get(delivery.id, set())
        final_row = delivery.status in TERMINAL_DELIVERY_STATUSES
        # Two final outcomes; a final row its record does not state; a record, row open.
        if len(said) > 1 or (said != {delivery.status} if final_row else bool(said)):
            found.append(f"delivery {delivery.id}: row {delivery.status}, records {sorted(said)}")
    for record in records:
        if record.type != AuditType.LOGOUT_SETTLED.value or record.event_id is None:
            continue
        tally = Counter(d.status for d in by_event.get(record.event_id, ()))
        claimed = {k: int(v) for k, v in (record.detail or {}).get("deliveries", {}).items() if v}
        if claimed != dict(tally):
            found.append(f"logout.settled of {record.event_id}: says {claimed}, rows {dict(tally)}")
    examples.extend(found[:_EXAMPLES])
    return len(found)
