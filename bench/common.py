"""What the benchmarks share: the machine, tables, CPU accounting, services, worker processes.

* the machine a run was measured on (:func:`machine_info`, :func:`machine_line`);
* Markdown tables and numbers (:func:`render_table`, :func:`fmt`, :func:`percentile`);
* CPU accounting from ``/proc`` (:func:`machine_cpu`, :func:`busy_percent`, :func:`group_cpu`);
* PostgreSQL and Redis (:func:`postgres_database`, :func:`clean_redis`, heartbeats);
* ``logout-orchestrator worker`` subprocesses (:class:`Worker`, :func:`worker_process`), their
  environment and settings;
* the command line: the parser, ``--json``, SIGTERM, writing the results.

``bench.rp_server`` does not import this module: it runs as a light subprocess of its own.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import Connection, Engine, create_engine, func, select, text
from sqlalchemy.engine import make_url

from orchestrator import Settings
from orchestrator.store import EventRecord, EventStatus

__all__ = [
    "DRAIN_TIMEOUT",
    "POSTGRES_URL",
    "REDIS_URL",
    "REPO",
    "RESULTS",
    "WORKER_START_TIMEOUT",
    "BenchError",
    "Worker",
    "add_json_option",
    "bench_settings",
    "busy_percent",
    "clean_redis",
    "command_line",
    "completed_events",
    "cpu_model",
    "exit_on_sigterm",
    "fmt",
    "forget_heartbeats",
    "group_cpu",
    "heartbeats",
    "kill_group",
    "logout_event",
    "machine_cpu",
    "machine_info",
    "machine_line",
    "new_parser",
    "percentile",
    "postgres_database",
    "postgres_version",
    "process_cpu",
    "redis_version",
    "render_table",
    "wait_consuming",
    "worker_cli",
    "worker_command",
    "worker_env",
    "worker_process",
    "write_json",
]

POSTGRES_URL = os.environ.get(
    "LOGOUT_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("LOGOUT_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"

#: Longest wait for a worker to start, or for one run to drain.
WORKER_START_TIMEOUT = 90.0
DRAIN_TIMEOUT = 300.0


class BenchError(RuntimeError):
    """The benchmark could not run, or what it measured is wrong."""


# -- numbers and tables ------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..1) of already sorted values."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


def fmt(value: float | None, digits: int = 2) -> str:
    """``value`` with thousands separators and ``digits`` decimals; ``-`` for ``None``."""
    return "-" if value is None else f"{value:,.{digits}f}"


def render_table(columns: Sequence[str], align: str, rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table; ``align`` has one letter per column: ``l`` (left) or ``r`` (right)."""
    if len(align) != len(columns):
        raise ValueError("one alignment letter per column")

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    lines = [line(columns), line(["---:" if a == "r" else "---" for a in align])]
    lines.extend(line(cells) for cells in rows)
    return "\n".join(lines)


# -- machine -----------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU model named in /proc/cpuinfo, or what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(versions: dict[str, Any]) -> dict[str, Any]:
    """What the numbers were measured on: CPU, cores, Python, ``versions``, kernel, load, date."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        **versions,
        "kernel": platform.release(),
        "loadavg_at_start": [round(v, 2) for v in os.getloadavg()],
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def machine_line(info: dict[str, Any], versions: str) -> str:
    """One line of :func:`machine_info`, with ``versions`` said between Python and Linux."""
    return (
        f"{info['cpu']}, {info['cores']} cores, Python {info['python']}, {versions}, "
        f"Linux {info['kernel']}, load average at start "
        f"{' / '.join(str(v) for v in info['loadavg_at_start'])}, {info['date']}"
    )


# -- CPU accounting ----------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return (0.0, 0.0)
    total = sum(fields[:8])  # guest time is already counted in user
    idle = fields[3] + fields[4]  # idle + iowait
    return ((total - idle) / _TICK, total / _TICK)


def busy_percent(before: tuple[float, float], after: tuple[float, float]) -> float | None:
    """Share of the machine's CPUs that were busy between two :func:`machine_cpu` samples."""
    total = after[1] - before[1]
    return None if total <= 0 else 100 * (after[0] - before[0]) / total


def _stat_fields(path: Path) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first)."""
    stat = path.read_text(encoding="ascii", errors="replace")
    return stat.rsplit(")", 1)[-1].split()


def group_cpu(pgid: int) -> float:
    """CPU seconds used so far by the live processes of process group ``pgid``."""
    used = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = _stat_fields(entry / "stat")
        except OSError:
            continue  # gone meanwhile
        if len(fields) > 12 and int(fields[2]) == pgid:
            used += int(fields[11]) + int(fields[12])  # utime + stime
    return used / _TICK


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a live process has used; 0 when it is gone or unreadable."""
    try:
        fields = _stat_fields(Path(f"/proc/{pid}/stat"))
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


# -- services ----------------------------------------------------------------------------


def _admin_engine(admin_url: str) -> Engine:
    url = make_url(admin_url)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    return create_engine(url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)


def postgres_version(admin_url: str) -> str:
    engine = _admin_engine(admin_url)
    try:
        with engine.connect() as connection:
            return str(connection.execute(text("SHOW server_version")).scalar_one())
    finally:
        engine.dispose()


@contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    """A fresh database ``lo_bench_<hex>``, dropped (WITH FORCE) afterwards; yields its URL."""
    admin = _admin_engine(admin_url)
    name = f"lo_bench_{secrets.token_hex(6)}"
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def completed_events(connection: Connection) -> int:
    """How many events are ``completed``."""
    count = connection.scalar(
        select(func.count())
        .select_from(EventRecord)
        .where(EventRecord.status == EventStatus.COMPLETED)
    )
    return int(count or 0)


@contextmanager
def _redis(url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(url, socket_connect_timeout=3)
    try:
        yield client
    finally:
        client.close()


def redis_version(url: str) -> str:
    with _redis(url) as client:
        info: dict[str, Any] = client.info("server")
        return str(info.get("redis_version", "?"))


def clean_redis(url: str, namespace: str) -> int:
    """Delete the namespace's queues and acks (``dramatiq:<namespace>*``); returns the count."""
    deleted = 0
    with _redis(url) as client:
        for pattern in (f"dramatiq:{namespace}*", f"dramatiq:__acks__.*.{namespace}*"):
            keys = list(client.scan_iter(match=pattern, count=1000))
            if keys:
                deleted += int(client.delete(*keys))
    return deleted


_HEARTBEATS = "dramatiq:__heartbeats__"


def heartbeats(url: str) -> set[str]:
    """Worker ids in dramatiq's heartbeat set (shared by every worker on this Redis db)."""
    with _redis(url) as client:
        members: list[bytes] = client.zrange(_HEARTBEATS, 0, -1)  # type: ignore[assignment]
        return {m.decode() if isinstance(m, bytes) else str(m) for m in members}


def forget_heartbeats(url: str, before: set[str]) -> None:
    """Remove the heartbeats our (stopped) workers left, i.e. those not in ``before``."""
    ours = heartbeats(url) - before
    if not ours:
        return
    with _redis(url) as client:
        client.zrem(_HEARTBEATS, *ours)


# -- events and settings -----------------------------------------------------------------


def logout_event(session_id: str) -> dict[str, Any]:
    """A ``logout.user`` event as a publisher sends it."""
    return {
        "type": "logout.user",
        "event_id": str(uuid.uuid4()),
        "occurred_at": datetime.now(UTC).isoformat(),
        "initiator": "user",
        "session_id": session_id,
    }


def bench_settings(data_dir: Path, database_url: str, **overrides: Any) -> Settings:
    """Settings with no protocols, an in-memory broker and WARNING logs, unless overridden."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "database_url": database_url,
        "broker_url": "memory://",
        "protocols": [],
        "egress_allow": ["127.0.0.1"],  # the benchmark's RPs listen on loopback
        "log_level": "WARNING",
        **overrides,
    }
    return Settings.load(None, **values)


def worker_env(**values: str) -> dict[str, str]:
    """This environment without its ``LOGOUT_*`` variables, then ``LOGOUT_<NAME>=value`` for
    each keyword, ``LOGOUT_LOG_LEVEL=WARNING`` unless given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGOUT_")}
    env.update({f"LOGOUT_{name.upper()}": value for name, value in values.items()})
    env.setdefault("LOGOUT_LOG_LEVEL", "WARNING")
    return env


# -- worker processes --------------------------------------------------------------------


def worker_cli() -> Path:
    """``logout-orchestrator`` of the interpreter's environment."""
    beside = Path(sys.executable).parent / "logout-orchestrator"
    if beside.exists():
        return beside
    found = shutil.which("logout-orchestrator")
    if found is None:
        raise BenchError("logout-orchestrator is not installed beside this Python")
    return Path(found)


def worker_command(processes: int, threads: int) -> list[str]:
    """The CLI's arguments for ``worker --processes P --threads T``."""
    return ["worker", "--processes", str(processes), "--threads", str(threads)]


@dataclass
class Worker:
    """A ``logout-orchestrator worker`` subprocess, in its own process group."""

    process: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def check_alive(self) -> None:
        """Raise :class:`BenchError` with the log's tail when the worker has exited."""
        if not self.alive():
            raise BenchError(f"worker exited ({self.process.returncode}):\n{self.output()}")

    def output(self, lines: int = 40) -> str:
        try:
            text_ = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text_.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM and wait; SIGKILL the group when it does not stop, or leaves children."""
        pid = self.process.pid
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            kill_group(pid)
            self.process.wait(timeout=10)
        deadline = time.monotonic() + 5
        while _group_exists(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _group_exists(pid):
            kill_group(pid)


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_group(pgid: int) -> None:
    """SIGKILL process group ``pgid``, if it is still there."""
    with suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


@contextmanager
def worker_process(
    command: Sequence[str], env: dict[str, str], log: Path, cwd: Path | None = None
) -> Iterator[Worker]:
    """Start ``command`` in its own process group, output to ``log``; stop it afterwards."""
    with open(log, "wb") as output:
        process = subprocess.Popen(
            list(command),
            env=env,
            cwd=cwd,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    worker = Worker(process, log)
    try:
        yield worker
    finally:
        worker.stop()


def wait_consuming(url: str, before: set[str], processes: int, worker: Worker) -> None:
    """Wait until ``processes`` new consumers heartbeat: every worker process is fetching."""
    deadline = time.monotonic() + WORKER_START_TIMEOUT
    while len(heartbeats(url) - before) < processes:
        worker.check_alive()
        if time.monotonic() > deadline:
            raise BenchError(f"worker processes did not start consuming:\n{worker.output()}")
        time.sleep(0.1)


# -- the command line --------------------------------------------------------------------


def new_parser(module: str, doc: str | None) -> argparse.ArgumentParser:
    """The parser of ``python -m bench.<module>``, described by ``doc``'s first paragraph."""
    return argparse.ArgumentParser(
        prog=f"python -m bench.{module}", description=doc.split("\n\n", 1)[0] if doc else ""
    )


def add_json_option(parser: argparse.ArgumentParser, default: Path) -> None:
    """``--json [PATH]``: also write the results as JSON, to ``default`` when PATH is omitted."""
    shown = default.relative_to(REPO) if default.is_relative_to(REPO) else default
    parser.add_argument(
        "--json",
        nargs="?",
        const=str(default),
        default=None,
        metavar="PATH",
        help=f"also write the results as JSON (PATH defaults to {shown})",
    )


def command_line(module: str, argv: Sequence[str] | None) -> str:
    """``python -m bench.<module> ARGS`` as it was run, without where ``--json`` wrote (a
    path of the machine that ran it, no part of the measurement)."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    kept: list[str] = []
    for argument in arguments:
        if kept and kept[-1] == "--json" and not argument.startswith("-"):
            continue
        kept.append("--json" if argument.startswith("--json=") else argument)
    return f"python -m bench.{module} {' '.join(kept)}".strip()


def exit_on_sigterm() -> None:
    """Exit (143) on SIGTERM, so that context managers clean up as on Ctrl-C."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def write_json(path_text: str, document: dict[str, Any]) -> None:
    """Write ``document`` (indented, final newline) to ``path_text``; say so on stderr."""
    path = Path(path_text)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {path}", file=sys.stderr)
