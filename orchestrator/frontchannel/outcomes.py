"""What the browser did with a plan, in the audit trail: one outcome per entry.

Every outcome of an entry shares one audit key, ``frontchannel:<plan_id>:<entry_id>``, so
the first one recorded is the entry's outcome and any later report (a retried beacon, a
late SP answer after a skip) writes nothing: reporting is idempotent per entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from orchestrator.audit import emit, write_audit
from orchestrator.logout.rollup import Tally
from orchestrator.plans import load_plan
from orchestrator.store import AuditRow, Database, Delivery, PlanRow
from orchestrator.trail import frontchannel_outcome
from schemas import AuditType, LogoutPlan, PlanEntry

__all__ = [
    "FRONTCHANNEL_TYPES",
    "GOOD_OUTCOMES",
    "Ledger",
    "Recorded",
]

FRONTCHANNEL_TYPES = (
    AuditType.FRONTCHANNEL_LOADED,
    AuditType.FRONTCHANNEL_TIMED_OUT,
    AuditType.FRONTCHANNEL_COMPLETED,
    AuditType.FRONTCHANNEL_SKIPPED,
)
#: Outcomes that leave the logout whole (anything else makes the answer ``PartialLogout``).
GOOD_OUTCOMES = frozenset({"loaded", "success"})


@dataclass(frozen=True, slots=True)
class Recorded:
    """An entry's outcome: ``new`` is False when an earlier one stood (and is shown)."""

    new: bool
    type: str
    outcome: str


@dataclass(frozen=True, slots=True)
class Ledger:
    """Plans and their front-channel outcomes, in ``database``."""

    database: Database

    def plan(self, plan_id: str) -> LogoutPlan | None:
        """The stored plan, or None."""
        return load_plan(self.database, plan_id)

    def plan_of_delivery(self, delivery_id: str) -> LogoutPlan | None:
        """The plan one of whose entries carries out ``delivery_id``, or None."""
        with self.database() as db:
            event_id = db.scalar(select(Delivery.event_id).where(Delivery.id == delivery_id))
            if event_id is None:
                return None
            bodies = db.scalars(select(PlanRow.body).where(PlanRow.event_id == event_id))
            plans = [LogoutPlan.model_validate(body) for body in bodies]
        for plan in plans:
            for stage in plan.stages:
                if any(entry.delivery_id == delivery_id for entry in stage.entries):
                    return plan
        return None

    def outcomes(self, plan: LogoutPlan) -> dict[str, Recorded]:
        """Each entry's recorded outcome, by entry id (entries without one are absent)."""
        with self.database() as db:
            rows = db.execute(
                select(AuditRow.type, AuditRow.outcome, AuditRow.detail)
                .where(
                    AuditRow.event_id == plan.event_id,
                    AuditRow.type.in_([t.value for t in FRONTCHANNEL_TYPES]),
                )
                .order_by(AuditRow.seq)
            ).all()
        found: dict[str, Recorded] = {}
        for kind, outcome, detail in rows:
            if detail.get("plan_id") == plan.plan_id:
                found.setdefault(str(detail.get("entry_id")), Recorded(False, kind, outcome))
        return found

    def record(
        self,
        plan: LogoutPlan,
        entry: PlanEntry,
        kind: AuditType,
        outcome: str,
        detail: Mapping[str, Any],
    ) -> Recorded:
        """Record the entry's outcome unless it has one; returns the one that stands."""
        audit = frontchannel_outcome(plan, entry, kind, outcome, detail)
        with self.database.begin() as db:
            written = write_audit(db, [audit])
        emit(written)
        if written:
            return Recorded(True, kind.value, outcome)
        return self.outcomes(plan).get(entry.entry_id, Recorded(False, kind.value, outcome))

    def partial(self, plan: LogoutPlan) -> bool:
        """True when any participant of the plan's logout is not known to be logged out:
        a back-channel delivery failed, retrying or still pending, or a front-channel entry
        without a good outcome (timed out, skipped, refused, or never reported)."""
        entries = {entry.delivery_id: entry for stage in plan.stages for entry in stage.entries}
        with self.database() as db:
            statuses = db.execute(
                select(Delivery.id, Delivery.status).where(Delivery.event_id == plan.event_id)
            ).all()
        backchannel = Tally.of(status for delivery, status in statuses if delivery not in entries)
        if not backchannel.logged_out:
            return True
        outcomes = self.outcomes(plan)
        return any(
            entry.entry_id not in outcomes or outcomes[entry.entry_id].outcome not in GOOD_OUTCOMES
            for entry in entries.values()
        )
