"""`worker --processes N`: the supervisor keeps N workers alive, and none outlives it."""

from __future__ import annotations

import contextlib
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
    supervisor = _supervisor(stack.env({**WORKER_SETTINGS, "LOGOUT_PROTOCOLS": "[]"}), log)
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


def test_ctrl_c_stops_the_supervisor_and_its_workers(stack: Stack) -> None:
    """Ctrl-C reaches the whole process group (the supervisor and each worker), then the
    supervisor sends each worker SIGTERM: a worker handling its second signal inside the
    first waited forever for a lock. Here the workers get a stream of SIGTERMs besides
    (so that one lands mid-handler). Twice, each with 2 workers: all stop within 30 s."""
    env = stack.env({**WORKER_SETTINGS, "LOGOUT_PROTOCOLS": "[]"})
    for round_ in range(2):
        _stop_with_ctrl_c(stack, env, stack.tmp_path / f"ctrl-c-{round_}.log")


def _supervisor(env: dict[str, str], log: Path, *, group: bool = False) -> subprocess.Popen[bytes]:
    """``worker --processes 2``, its output in ``log``; ``group``: in a process group of its
    own, as a terminal's job is."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [str(CLI), "worker", "--processes", "2", "--threads", "2"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=group,
        )


def _stop_with_ctrl_c(stack: Stack, env: dict[str, str], log: Path) -> None:
    supervisor = _supervisor(env, log, group=True)
    try:
        stack.wait_for(lambda: len(_workers(supervisor.pid)) == 2, what="two workers")
        stack.wait_for(
            lambda: log.read_text().count('"worker started"') == 2, what="both workers started"
        )
        workers = _workers(supervisor.pid)
        os.killpg(supervisor.pid, signal.SIGINT)
        _keep_signalling(workers, signal.SIGTERM, seconds=0.5)  # more than the supervisor
        try:
            code = supervisor.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the supervisor did not stop on Ctrl-C:\n{log.read_text()}")
        assert code == 0, log.read_text()
        assert [pid for pid in workers if _alive(pid)] == []
    finally:
        if supervisor.poll() is None:
            os.killpg(supervisor.pid, signal.SIGKILL)
            supervisor.wait(timeout=10)


def _keep_signalling(pids: set[int], number: signal.Signals, seconds: float) -> None:
    """Send ``number`` to each of ``pids`` every millisecond for ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):  # it stopped already
                os.kill(pid, number)
        time.sleep(0.001)
