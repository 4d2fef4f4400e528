"""Fixtures shared by unit and integration tests, and the suite's pytest-xdist plumbing: the
slowest tests first, and the fault campaign's table from the worker that ran it."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from tests.geoip_data import GeoipFiles, write_geoip_databases

#: Tests (node id prefixes) that take longest, in the order a worker should start them,
#: so that under pytest-xdist no long one is left for the end. Seconds measured serially.
SLOW_FIRST = (
    "tests/faults/test_campaign.py",  # one group of scenarios, 12-23 s each
)

_CAMPAIGNS = pytest.StashKey[list[dict[str, Any]]]()


@pytest.fixture(scope="session")
def geoip_files(tmp_path_factory: pytest.TempPathFactory) -> GeoipFiles:
    """City and ASN test databases, written once per run from ``tests/geoip_data.py``."""
    return write_geoip_databases(tmp_path_factory.mktemp("geoip"))


def _slow_rank(item: pytest.Item) -> int:
    for rank, prefix in enumerate(SLOW_FIRST):
        if item.nodeid.startswith(prefix):
            return rank
    return len(SLOW_FIRST)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (each worker collects; all in the same order): the slow tests of
    :data:`SLOW_FIRST` first, the rest in their usual order. A serial run keeps that order."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=_slow_rank)  # stable


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """pytest-xdist's controller: keep the fault campaign's figures a worker handed over
    (``tests/faults/conftest.py``)."""
    from tests.faults.measure import WORKER_OUTPUT

    output = getattr(node, "workeroutput", {}).get(WORKER_OUTPUT)
    if output:
        node.config.stash.setdefault(_CAMPAIGNS, []).append(json.loads(output))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """pytest-xdist's controller: the fault campaign's table, as a serial run prints it."""
    campaigns = terminalreporter.config.stash.get(_CAMPAIGNS, [])
    if not campaigns:
        return
    from tests.faults.measure import Figures, write_summary

    for found in campaigns:
        rows = [Figures(**row) for row in found["rows"]]
        write_summary(terminalreporter, found["variant"], rows, found["path"])
