"""Riding out an outage: one thread probes and says so once per growing back-off step,
the others wait silently; work is run again once the server answers, never for errors
that are no outage."""

from __future__ import annotations

import threading
import time

import pytest
import sqlalchemy.exc
from structlog.testing import capture_logs

from orchestrator.errors import DatabaseUnavailableError
from orchestrator.logging import configure_logging
from workers import outage
from workers.outage import Health, Outage, Passed


class FlakyServer:
    """A probe that fails ``down`` times, then answers."""

    def __init__(self, down: int) -> None:
        self.down = down
        self.probes = 0
        self.lock = threading.Lock()

    def probe(self) -> None:
        with self.lock:
            self.probes += 1
            if self.down > 0:
                self.down -= 1
                raise DatabaseUnavailableError("database unreachable: db.test")


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    configure_logging("INFO", "json")  # an earlier test may have left a higher level
    monkeypatch.setattr(outage, "BACKOFF_FIRST", 0.01)
    monkeypatch.setattr(outage, "BACKOFF_CAP", 0.04)


def _operational() -> sqlalchemy.exc.OperationalError:
    return sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("connection refused"))


def test_a_server_that_answers_is_no_outage() -> None:
    """The probe answers at once: NO_OUTAGE, and nothing is logged."""
    server = FlakyServer(down=0)
    with capture_logs() as logs:
        assert Outage("database", server.probe, threading.Event()).ride_out() is Passed.NO_OUTAGE
    assert logs == []


def test_many_threads_one_line_per_backoff_step() -> None:
    """Eight threads hit one outage: the lines are those of one waiter (0.01, 0.02, 0.04,
    0.04 s), then one "reachable again"; every thread goes on."""
    server = FlakyServer(down=5)
    down = Outage("database", server.probe, threading.Event())
    results: list[Passed] = []
    start = threading.Barrier(8)

    def hit() -> None:
        start.wait()
        results.append(down.ride_out())

    with capture_logs() as logs:
        threads = [threading.Thread(target=hit) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    assert results == [Passed.RECOVERED] * 8
    waits = [entry["retry_in"] for entry in logs if "retry_in" in entry]
    assert waits == [0.01, 0.02, 0.04, 0.04]
    assert [e["event"] for e in logs if "retry_in" not in e] == [
        "database reachable again; resuming"
    ]
    assert not down.active


def test_stop_ends_the_wait() -> None:
    """A stopping process gives up the wait (the caller does not acknowledge the work)."""
    stop = threading.Event()
    down = Outage("broker", FlakyServer(down=10**6).probe, stop)
    threading.Timer(0.05, stop.set).start()
    started = time.monotonic()
    assert down.ride_out() is Passed.STOPPED
    assert time.monotonic() - started < 2


def test_guard_runs_the_job_again_after_an_outage() -> None:
    """The job failed because the database was down: it runs again once it answers."""
    server = FlakyServer(down=2)
    health = Health(
        database=Outage("database", server.probe, threading.Event()),
        broker=Outage("broker", FlakyServer(0).probe, threading.Event()),
    )
    calls: list[int] = []

    def job() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise _operational()
        return "done"

    assert health.guard(job) == "done"
    assert len(calls) == 2


def test_guard_raises_what_is_no_outage() -> None:
    """A bug, or a database error while the database answers, is raised at once."""
    health = Health(
        database=Outage("database", FlakyServer(0).probe, threading.Event()),
        broker=Outage("broker", FlakyServer(0).probe, threading.Event()),
    )

    def bug() -> None:
        raise KeyError("bug")

    def failing_query() -> None:
        raise _operational()

    with pytest.raises(KeyError):
        health.guard(bug)
    with pytest.raises(sqlalchemy.exc.OperationalError):
        health.guard(failing_query)
