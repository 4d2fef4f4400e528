"""Recording outcomes on PostgreSQL, where they go as one statement (``RECORD_OUTCOMES``):
the unit tests of fencing and mixed outcomes (``tests/unit/test_deliveries.py``, on SQLite)
run again here on a real server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.test_deliveries import (  # noqa: F401 - collected here too, on PostgreSQL
    _Env,
    one_rp,
    open_env,
    test_503_retries_then_succeeds,
    test_a_final_status_never_changes,
    test_a_superseded_attempt_records_nothing,
    test_a_superseded_attempt_records_nothing_while_the_next_is_in_flight,
    test_logout_settles_when_the_last_retry_ends,
    test_one_event_mixes_outcomes,
    test_two_engines_racing_send_each_delivery_once,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def env(tmp_path: Path, postgres_url: str) -> Iterator[_Env]:
    """The unit tests' environment on a fresh PostgreSQL database."""
    with open_env(tmp_path, postgres_url) as environment:
        yield environment
