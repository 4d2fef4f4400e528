"""Fixtures shared by unit and integration tests, and the suite's pytest-xdist plumbing: the
slowest tests first, tests marked ``alone`` with no other test beside them, and the fault
campaign's table from the worker that ran it."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import pytest

from tests.geoip_data import GeoipFiles, write_geoip_databases

#: Tests (node id prefixes) that take longest, in the order a worker should start them,
#: so that under pytest-xdist no long one is left for the end. Seconds measured serially.
SLOW_FIRST = (
    "tests/faults/test_campaign.py",  # five scenarios of 12-23 s (serially, on a calm machine)
    "tests/integration/test_worker_outages.py",  # RabbitMQ's 38 s
    "tests/integration/test_redis_wakeup.py",  # 35 s
    "tests/integration/test_api_fuzz.py",  # schemathesis: 23 s
)

_CAMPAIGNS = pytest.StashKey[list[dict[str, Any]]]()


@pytest.fixture(scope="session")
def geoip_files(tmp_path_factory: pytest.TempPathFactory) -> GeoipFiles:
    """City and ASN test databases, written once per run from ``tests/geoip_data.py``."""
    return write_geoip_databases(tmp_path_factory.mktemp("geoip"))


def _rank(item: pytest.Item) -> int:
    if item.get_closest_marker("alone") is not None:
        return len(SLOW_FIRST) + 1  # last, when the other workers' queues run dry
    for rank, prefix in enumerate(SLOW_FIRST):
        if item.nodeid.startswith(prefix):
            return rank
    return len(SLOW_FIRST)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (each worker collects; all in the same order): the slow tests of
    :data:`SLOW_FIRST` first, those marked ``alone`` last, the rest in their usual order
    between. A serial run keeps the usual order."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=_rank)  # stable


_held: dict[str, IO[str]] = {}
#: The folder of the run's lock files: made by pytest-xdist's controller, handed to every
#: worker in its ``workerinput`` under this name, removed when the run ends.
_LOCKS_INPUT = "logout_lock_folder"
_LOCKS = pytest.StashKey[Path]()


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """pytest-xdist's controller, before it starts each worker: where the run's lock files
    are (one folder for all the workers of this run)."""
    config: pytest.Config = node.config
    if _LOCKS not in config.stash:
        config.stash[_LOCKS] = Path(tempfile.mkdtemp(prefix="logout-test-locks-"))
    node.workerinput[_LOCKS_INPUT] = str(config.stash[_LOCKS])


def pytest_unconfigure(config: pytest.Config) -> None:
    """The controller: remove the run's lock files."""
    folder = config.stash.get(_LOCKS, None)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


def _lock_file(config: pytest.Config, name: str) -> IO[str]:
    """A lock file every worker of this run shares (see :func:`pytest_configure_node`)."""
    if name not in _held:
        folder = Path(config.workerinput[_LOCKS_INPUT])  # type: ignore[attr-defined]
        _held[name] = (folder / f"{name}.lock").open("a+")
    return _held[name]


@contextmanager
def _turnstile(config: pytest.Config, alone: bool) -> Iterator[None]:
    """A test marked ``alone`` waits until the other workers' current tests end, and keeps
    them from starting another until it ends (an exclusive lock); every other test holds a
    shared lock while it runs. Both first pass a gate a waiting ``alone`` test holds, so a
    stream of other tests cannot starve it."""
    gate, run = _lock_file(config, "gate"), _lock_file(config, "run")
    fcntl.flock(gate, fcntl.LOCK_EX)
    try:
        fcntl.flock(run, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
    finally:
        if not alone:
            fcntl.flock(gate, fcntl.LOCK_UN)
    try:
        yield
    finally:
        fcntl.flock(run, fcntl.LOCK_UN)
        if alone:
            fcntl.flock(gate, fcntl.LOCK_UN)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None]:
    """Under pytest-xdist: a test marked ``alone`` (it asserts on timings) runs with no other
    test of the run beside it (:func:`_turnstile`), set-up and tear-down included."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return (yield)
    with _turnstile(item.config, item.get_closest_marker("alone") is not None):
        return (yield)


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
