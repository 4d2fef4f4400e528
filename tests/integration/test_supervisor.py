"""`worker --processes N`: the supervisor keeps N workers alive, and none outlives it."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from orchestrator.store import EventRecord, EventStatus

from .support import CLI, WORKER_SETTINGS, Stack, logout_event

pytestmark = pytest.mark.integration


def _children(pid: int) -> set[int]:
    """Live child processes of ``pid`` (zombies excluded), read from /proc."""
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        state, parent = fields[0], int(fields[1])
        if parent == pid and state != "Z":
            found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _workers(pid: int) -> set[int]:
    """The supervisor's worker processes (multiprocessing's resource tracker excluded)."""
    return {
        child
        for child in _children(pid)
        if b"resource_tracker" not in Path(f"/proc/{child}/cmdline").read_bytes()
    }


def test_supervisor_restarts_workers_and_takes_them_down_with_it(stack: Stack) -> None:
    """A killed worker is replaced; events still complete; killing the supervisor kills all."""
    stack.seed(
        records=[{"kind": "session", "session_id": f"s-{n}", "user_id": "u"} for n in range(20)]
    )
    log = stack.tmp_path / "supervisor.log"
    env = stack.env({**WORKER_SETTINGS, "LOGOUT_PROTOCOLS": "[]"})
    with log.open("wb") as out:
        supervisor = subprocess.Popen(
            [str(CLI), "worker", "--processes", "2", "--threads", "2"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )
    try:
        stack.wait_for(lambda: len(_workers(supervisor.pid)) == 2, what="two worker processes")
        first = _workers(supervisor.pid)
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        stack.wait_for(
            lambda: len(_workers(supervisor.pid)) == 2 and victim not in _workers(supervisor.pid),
            what="the supervisor to replace the killed worker",
        )
        assert supervisor.poll() is None, log.read_text()

        with stack.publisher() as publisher:
            publisher.publish_many([logout_event(f"s-{n}") for n in range(20)])

        def completed() -> int:
            with stack.db() as db:
                return int(
                    db.scalar(
                        select(func.count())
                        .select_from(EventRecord)
                        .where(EventRecord.status == EventStatus.COMPLETED)
                    )
                    or 0
                )

        stack.wait_for(lambda: completed() == 20, what="20 events completed", timeout=60)

        workers = _workers(supervisor.pid)
        supervisor.kill()
        supervisor.wait(timeout=10)
        deadline = time.monotonic() + 30  # they finish what they hold, then stop
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        orphans = [pid for pid in workers if _alive(pid)]
        assert orphans == [], f"workers outlived their supervisor: {orphans}"
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait(timeout=10)
