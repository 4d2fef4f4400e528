"""The one tally of deliveries by status, as the roll-ups, the waiter and the browser read it."""

from __future__ import annotations

import pytest

from orchestrator.logout import Tally
from orchestrator.store import DeliveryStatus


@pytest.mark.parametrize(
    ("statuses", "completed", "settled", "logged_out"),
    [
        ([], "success", True, True),
        (["succeeded", "skipped"], "success", True, True),
        (["succeeded", "retrying"], "retrying", False, False),
        (["pending"], "retrying", False, False),
        (["failed", "retrying"], "partial", False, False),
        (["failed", "succeeded"], "partial", True, False),
    ],
)
def test_tally_outcomes(
    statuses: list[str], completed: str, settled: bool, logged_out: bool
) -> None:
    """A tally says the completed outcome, whether it is settled, and whether all logged out."""
    tally = Tally.of(statuses)
    assert tally.completed_outcome == completed
    assert tally.settled is settled
    assert tally.logged_out is logged_out
    assert tally.settled_outcome == ("partial" if "failed" in statuses else "success")


def test_tally_detail_names_every_status() -> None:
    """An audit record's ``deliveries`` lists every status, zeros included."""
    detail = Tally.of([DeliveryStatus.SUCCEEDED, "succeeded", "failed"]).as_detail()
    assert detail == {"pending": 0, "retrying": 0, "succeeded": 2, "failed": 1, "skipped": 0}
