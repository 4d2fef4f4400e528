"""Fixtures of the fault campaign: one PostgreSQL cluster per session (a scenario stops it),
one Redis server per scenario (a scenario kills it), and the campaign's table at the end.

``LOGOUT_TEST_FAULTS=full`` runs the long variant; the servers it starts take their ports
from ``LOGOUT_TEST_PORTS=FIRST-LAST`` when set (``tests/integration/servers.py``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pytest

from orchestrator.settings import Settings
from tests.integration.conftest import pytest_runtest_makereport
from tests.integration.servers import OwnPostgres
from tests.integration.support import WORKER_LOGS, missing

from .measure import WORKER_OUTPUT, write_summary
from .world import Campaign, Sizes, World, world_of

__all__ = ["pytest_runtest_makereport", "pytest_sessionfinish", "pytest_terminal_summary"]

_DEFAULTS = Settings.model_fields

#: Small enough for ./scripts/test: about two minutes for every scenario together.
CI = Sizes(
    name="ci",
    kill_events=300,
    redis_events=200,
    postgres_events=200,
    slow_events=40,
    poison_valid=20,
    poison_repeat=1,
    deadline=60.0,
    # Longer than a lease (15 s at the default delivery_timeout) and its 1 s margin: a copy of
    # a message whose event a SIGKILLed worker held is put back for when that lease ends, and
    # is acknowledged then (a duplicate of the completed event), not stranded.
    drain=30.0,
    worker_settings={},
)
#: The long variant: the issue's sizes, and the product's own dead-worker hand-over
#: (heartbeat timeout and maintenance chance at their defaults, not the suite's fast ones).
FULL = Sizes(
    name="full",
    kill_events=1000,
    redis_events=400,
    postgres_events=400,
    slow_events=120,
    poison_valid=200,
    poison_repeat=3,
    deadline=600.0,
    drain=60.0,
    worker_settings={
        "LOGOUT_REDIS_HEARTBEAT_TIMEOUT_MS": str(_DEFAULTS["redis_heartbeat_timeout_ms"].default),
        "LOGOUT_REDIS_MAINTENANCE_CHANCE": str(_DEFAULTS["redis_maintenance_chance"].default),
    },
)
_VARIANTS = {"": CI, "ci": CI, "full": FULL}

_CAMPAIGN = pytest.StashKey[Campaign]()


def variant() -> Sizes:
    """The variant ``LOGOUT_TEST_FAULTS`` names (unset: the CI one)."""
    name = os.environ.get("LOGOUT_TEST_FAULTS", "").strip().lower()
    if name not in _VARIANTS:
        missing(
            f"LOGOUT_TEST_FAULTS={name!r} names no variant of the fault campaign",
            "use full (the long variant) or ci, or leave it unset",
        )
    return _VARIANTS[name]


@pytest.fixture(scope="session")
def campaign(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Campaign]:
    """The campaign: its variant, PostgreSQL cluster and figures file."""
    found = Campaign(
        sizes=variant(),
        path=tmp_path_factory.getbasetemp() / "faults-campaign.json",
    )
    request.config.stash[_CAMPAIGN] = found
    found.postgres = OwnPostgres()
    try:
        found.postgres.start()
        yield found
    finally:
        found.postgres.remove()


@pytest.fixture
def world(request: pytest.FixtureRequest, campaign: Campaign, tmp_path: Path) -> Iterator[World]:
    """This scenario's world; its servers and workers are stopped afterwards, pass or fail."""
    logs: list[Path] = []
    request.node.stash[WORKER_LOGS] = logs
    name = request.node.name.removeprefix("test_").replace("_", "-")
    with world_of(campaign, tmp_path, logs, name) as built:
        yield built


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The campaign's table, whatever the verbosity or capture: where a CI log shows it.
    (Under pytest-xdist the controller prints it from the workers' figures: tests/conftest.py.)"""
    found = terminalreporter.config.stash.get(_CAMPAIGN, None)
    if found is None or not found.results:
        return
    write_summary(terminalreporter, found.sizes.name, found.results, found.path)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """On a pytest-xdist worker: hand the campaign's figures to the controller."""
    found = session.config.stash.get(_CAMPAIGN, None)
    output = getattr(session.config, "workeroutput", None)
    if found is None or not found.results or output is None:
        return
    output[WORKER_OUTPUT] = json.dumps(
        {
            "variant": found.sizes.name,
            "path": str(found.path),
            "rows": [asdict(row) for row in found.results],
        }
    )
