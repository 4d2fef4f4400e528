"""Fan-out of OIDC back-channel logouts by a real worker: latency by number of RPs, throughput.

a. **Latency**: an idle ``logout-orchestrator worker --processes 1 --threads 8`` gets one
   ``logout.user`` whose session has N back-channel RPs (N = 1, 10, 100, 500), each RP its own
   ``127.0.0.1:port`` (all served by one asyncio subprocess, answering 200 after 50 ms); the time
   runs from publishing to the ``logout.completed`` audit record, split into pick-up (publish to
   ``event.received``) and the event's own work (``event.received`` to ``logout.completed``).
b. **Throughput**: E ``logout.user`` events, each ending a session with 5 RPs (5 ports of nginx,
   or of the Python server when nginx is absent, answering 200 at once), published at once to an
   idle ``--processes 2 --threads 32`` worker; deliveries per second until every event is
   completed and every delivery final, with RS256 and with ES256 keys, beside the floor of
   ``bench.http_transports`` (signing alone; signing + POST in a bare asyncio loop).

Run ``python -m bench.fanout --help``; see ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import Engine, func, select, text
from sqlalchemy.engine import make_url

from bench.common import (
    DRAIN_TIMEOUT,
    POSTGRES_URL,
    REDIS_URL,
    REPO,
    RESULTS,
    WORKER_START_TIMEOUT,
    BenchError,
    Worker,
    add_json_option,
    bench_settings,
    busy_percent,
    clean_redis,
    command_line,
    completed_events,
    exit_on_sigterm,
    forget_heartbeats,
    group_cpu,
    heartbeats,
    kill_group,
    logout_event,
    machine_cpu,
    new_parser,
    percentile,
    postgres_database,
    postgres_version,
    process_cpu,
    redis_version,
    render_table,
    wait_consuming,
    worker_cli,
    worker_command,
    worker_env,
    worker_process,
    write_json,
)
from bench.http_transports import (
    Budget,
    floor_sign_and_post,
    measure_signing,
    request_builder,
)
from bench.pipeline import machine, machine_line
from bench.rp_server import RpServer, light_rp_server, python_rp_server
from orchestrator import Publisher, Runtime, Settings
from orchestrator.chain.sealing import seal
from orchestrator.logging import configure_logging
from orchestrator.store import (
    TERMINAL_DELIVERY_STATUSES,
    Delivery,
    DeliveryStatus,
    make_engine,
)
from protocols.oidc.keys import Algorithm, load_key
from schemas import ProviderConfig, ProviderSessionRecord, SessionRecord
from workers import build_broker

__all__ = ["main"]

DEFAULT_JSON = RESULTS / "fanout.json"

#: Latency: how often the audit trail is polled, how long the worker idles before each event.
LATENCY_POLL = 0.005
LATENCY_RP_DELAY_MS = 50.0
#: Throughput: RPs per session, worker shape, polling.
THROUGHPUT_RPS = 5
THROUGHPUT_SHAPE = (2, 32)
THROUGHPUT_POLL = 0.05
LATENCY_SHAPE = (1, 8)
SEED_CHUNK = 2000
EVENT_TIMEOUT = 60.0
#: ``--sender httpx-aiohttp``: the worker runs as ``python -m bench.fanout --worker-cli worker ...``
#: with this variable set, and every worker process patches ``Runtime.sender`` on import.
WORKER_CLI_FLAG = "--worker-cli"
SENDER_SHIM_ENV = "LO_BENCH_SENDER"
SHIM_MARKER = "bench: sender shim installed in pid"
SENDERS = {
    "product": "product `HttpSender` (as shipped: aiohttp directly)",
    "httpx-aiohttp": (
        "bench shim: `HttpSender` over httpx + `AiohttpTransport` (the previous sender)"
    ),
}
#: The target the issue states for RS256 on this machine.
TARGET_DELIVERIES_PER_SECOND = 2000


# -- results ---------------------------------------------------------------------------


@dataclass
class LatencyRow:
    """One N of the latency benchmark (times in ms)."""

    series: str
    rps: int
    runs: int
    median_ms: float
    max_ms: float
    pickup_median_ms: float
    pickup_max_ms: float
    work_median_ms: float
    work_max_ms: float
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ThroughputRow:
    """One line of the throughput table."""

    scenario: str
    keys: str
    events: int | None
    deliveries: int
    seconds: float
    rate: float
    cpu_ms: float | None = None
    busy: float | None = None
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def latency_table(rows: Sequence[LatencyRow]) -> str:
    columns = (
        "series",
        "RPs (N)",
        "runs",
        "publish → `logout.completed` median (ms)",
        "max (ms)",
        "pick-up median (ms)",
        "pick-up max (ms)",
        "`event.received` → `logout.completed` median (ms)",
        "max (ms)",
        "notes",
    )
    return render_table(
        columns,
        "lrrrrrrrrl",
        (
            (
                row.series,
                f"{row.rps:,}",
                str(row.runs),
                f"{row.median_ms:,.0f}",
                f"{row.max_ms:,.0f}",
                f"{row.pickup_median_ms:,.0f}",
                f"{row.pickup_max_ms:,.0f}",
                f"{row.work_median_ms:,.0f}",
                f"{row.work_max_ms:,.0f}",
                row.notes,
            )
            for row in rows
        ),
    )


def latency_ratios(rows: Sequence[LatencyRow], low: int = 1, high: int = 100) -> list[str]:
    """``N=high / N=low`` of the medians, per series."""
    lines = []
    for series in dict.fromkeys(row.series for row in rows):
        by_n = {row.rps: row for row in rows if row.series == series}
        if low in by_n and high in by_n:
            a, b = by_n[low], by_n[high]
            lines.append(
                f"{series}: N={high} / N={low} = {b.median_ms / a.median_ms:.2f} publish to "
                f"completed (issue 13: ≤ 1.8), {b.work_median_ms / a.work_median_ms:.2f} "
                f"received to completed (a sequential sender: ≥ "
                f"{high * LATENCY_RP_DELAY_MS / 1000:g} s for N={high})"
            )
    return lines


def throughput_table(rows: Sequence[ThroughputRow]) -> str:
    columns = (
        "scenario",
        "keys",
        "events",
        "deliveries",
        "time (s)",
        "deliveries/s",
        "CPU ms/delivery",
        "machine busy",
        "notes",
    )
    return render_table(
        columns,
        "llrrrrrrl",
        (
            (
                row.scenario,
                row.keys,
                "-" if row.events is None else f"{row.events:,}",
                f"{row.deliveries:,}",
                f"{row.seconds:.2f}",
                f"{row.rate:,.0f}",
                "-" if row.cpu_ms is None else f"{row.cpu_ms:.2f}",
                "-" if row.busy is None else f"{row.busy:.0f}%",
                row.notes,
            )
            for row in rows
        ),
    )


# -- set-up ----------------------------------------------------------------------------


def generate_key_file(directory: Path, alg: Algorithm) -> Path:
    """``logout-orchestrator keys generate --alg ALG --dir DIR``; returns the PEM's path."""
    directory.mkdir(parents=True, exist_ok=True)
    before = set(directory.glob("*.pem"))
    env = worker_env(data_dir=str(directory.parent), log_level="WARNING")
    subprocess.run(
        [str(worker_cli()), "keys", "generate", "--alg", alg, "--dir", str(directory)],
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    made = sorted(set(directory.glob("*.pem")) - before)
    if len(made) != 1:
        raise BenchError(f"keys generate wrote {len(made)} files in {directory}")
    return made[0]


def oidc_settings(data_dir: Path, database_url: str, namespace: str, key_file: Path) -> Settings:
    return bench_settings(
        data_dir,
        database_url,
        broker_url=REDIS_URL,
        namespace=namespace,
        protocols=["oidc"],
        protocol_settings={"oidc": {"key_files": [str(key_file)]}},
    )


def oidc_worker_env(
    data_dir: Path,
    database_url: str,
    namespace: str,
    key_file: Path,
    worker_timeout_ms: int | None,
) -> dict[str, str]:
    env = worker_env(
        broker_url=REDIS_URL,
        database_url=database_url,
        namespace=namespace,
        data_dir=str(data_dir),
        log_level="WARNING",
        protocols="oidc",
        oidc_key_files=json.dumps([str(key_file)]),
        egress_allow="127.0.0.1",  # the benchmark's RPs listen on loopback
    )
    env.pop("dramatiq_worker_timeout", None)
    if worker_timeout_ms is not None:
        # dramatiq reads its default ``worker_timeout`` from this variable (no code change).
        env["dramatiq_worker_timeout"] = str(worker_timeout_ms)
    return env


def seed(
    runtime: Runtime,
    server: RpServer,
    providers: int,
    sessions: Sequence[tuple[str, int]],
) -> None:
    """``providers`` OIDC RPs ``rp-NNNN`` (RP i on the server's site i), then the sessions:
    ``(session_id, n)`` has provider sessions at RPs 0..n-1."""
    registry = runtime.registry
    registry.upsert_providers(
        [
            ProviderConfig.model_validate(
                {
                    "name": f"rp-{index:04d}",
                    "protocol": "oidc",
                    "client_id": f"rp-{index:04d}",
                    "backchannel_logout_uri": server.url(index),
                    "allow_http": True,
                }
            )
            for index in range(providers)
        ]
    )
    records: list[SessionRecord | ProviderSessionRecord] = []

    def flush() -> None:
        if records:
            registry.import_records(records)
            records.clear()

    for session_id, count in sessions:
        records.append(
            SessionRecord.model_validate(
                {"kind": "session", "session_id": session_id, "user_id": f"u-{session_id}"}
            )
        )
        records.extend(
            ProviderSessionRecord.model_validate(
                {
                    "kind": "provider_session",
                    "session_id": session_id,
                    "provider": f"rp-{index:04d}",
                    "sid": f"sid-{session_id}-{index}",
                    "sub": f"u-{session_id}",
                }
            )
            for index in range(count)
        )
        if len(records) >= SEED_CHUNK:
            flush()
    flush()


@contextmanager
def sender_worker_process(
    env: dict[str, str], log: Path, processes: int, threads: int, sender: str
) -> Iterator[Worker]:
    """``logout-orchestrator worker --processes P --threads T`` in its own process group.

    ``sender="httpx-aiohttp"`` runs the same CLI through ``python -m bench.fanout --worker-cli``
    with the sender shim installed in every worker process (see :func:`install_sender_shim`).
    """
    shape = worker_command(processes, threads)
    if sender == "product":
        command = [str(worker_cli()), *shape]
    else:
        command = [sys.executable, "-m", "bench.fanout", WORKER_CLI_FLAG, *shape]
        env = {**env, SENDER_SHIM_ENV: sender}
    with worker_process(command, env, log, cwd=REPO) as worker:
        yield worker


@contextmanager
def running_worker(
    env: dict[str, str], log: Path, shape: tuple[int, int], sender: str
) -> Iterator[Worker]:
    """A worker of ``shape`` (processes, threads), consuming; its heartbeats removed after."""
    processes, threads = shape
    before = heartbeats(REDIS_URL)
    try:
        with sender_worker_process(env, log, processes, threads, sender) as worker:
            wait_consuming(REDIS_URL, before, processes, worker)
            if sender != "product":
                check_shim(worker, processes)
            yield worker
    finally:
        forget_heartbeats(REDIS_URL, before)


def _psycopg_url(database_url: str) -> str:
    url = make_url(database_url)
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


# -- a. latency ------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """One event of the latency benchmark, in seconds from publishing."""

    seen: float  # logout.completed visible to a reader (committed), by polling
    completed_at: float  # the record's own ``at`` (stamped as the last transaction begins)
    received_at: float  # event.received's ``at``: the worker has picked the message up
    not_succeeded: int = 0  # deliveries not succeeded when the event completed
    errors: tuple[str, ...] = ()  # their errors (``delivery.retrying``/``failed`` records)

    @property
    def work(self) -> float:
        return self.completed_at - self.received_at


def time_event(
    publisher: Publisher,
    poll: psycopg.Connection[Any],
    session_id: str,
    rps: int,
    worker: Worker,
) -> Timing:
    """Publish one event for ``session_id``; poll until its ``logout.completed`` is there."""
    event = logout_event(session_id)
    event_id = event["event_id"]
    query = (
        "SELECT type, at, detail FROM audit_records WHERE event_id = %s "
        "AND type IN ('event.received', 'logout.completed')"
    )
    start = time.time()
    publisher.publish(event)
    deadline = time.monotonic() + EVENT_TIMEOUT
    while True:
        rows = {row[0]: row for row in poll.execute(query, (event_id,)).fetchall()}
        if "logout.completed" in rows:
            seen = time.time() - start
            break
        worker.check_alive()
        if time.monotonic() > deadline:
            raise BenchError(f"no logout.completed after {EVENT_TIMEOUT:.0f}s:\n{worker.output()}")
        time.sleep(LATENCY_POLL)
    _type, completed_at, detail = rows["logout.completed"]
    counts = detail.get("deliveries", {})
    if sum(counts.values()) != rps:
        raise BenchError(f"expected {rps} deliveries, got {detail}")
    succeeded = counts.get(DeliveryStatus.SUCCEEDED.value, 0)
    errors: tuple[str, ...] = ()
    if succeeded != rps:
        # Reported, not fatal: e.g. the default transport timing out under its own CPU load.
        errors = tuple(
            str(row[0])
            for row in poll.execute(
                "SELECT detail->>'error' FROM audit_records WHERE event_id = %s "
                "AND type IN ('delivery.retrying', 'delivery.failed')",
                (event_id,),
            ).fetchall()
        )
    received_at = rows["event.received"][1]
    return Timing(
        seen=seen,
        completed_at=completed_at.timestamp() - start,
        received_at=received_at.timestamp() - start,
        not_succeeded=rps - succeeded,
        errors=errors,
    )


def run_latency(
    server: RpServer,
    data_dir: Path,
    key_file: Path,
    counts: Sequence[int],
    repeats: int,
    idle: float,
    worker_timeout_ms: int | None,
    sender: str,
) -> list[LatencyRow]:
    """One series: a fresh database and worker; per N one warm-up event, then ``repeats``."""
    series = SENDERS[sender] + (
        ", dramatiq default worker_timeout (1000 ms)"
        if worker_timeout_ms is None
        else f", `dramatiq_worker_timeout={worker_timeout_ms}` (env)"
    )
    alg = load_key(key_file).alg
    if alg != "RS256":
        series += f", {alg} keys"
    namespace = f"lobench{secrets.token_hex(5)}"
    runs = 1 + repeats
    sessions = [(f"lat-{n}-{run}", n) for n in counts for run in range(runs)]
    rows: list[LatencyRow] = []
    with ExitStack() as stack:
        database_url = stack.enter_context(postgres_database(POSTGRES_URL))
        stack.callback(clean_redis, REDIS_URL, namespace)
        settings = oidc_settings(data_dir, database_url, namespace, key_file)
        runtime = Runtime.start(settings)
        try:
            seed(runtime, server, max(counts), sessions)
        finally:
            runtime.close()
        env = oidc_worker_env(data_dir, database_url, namespace, key_file, worker_timeout_ms)
        log = data_dir / f"worker-latency-{sender}-{worker_timeout_ms or 'default'}.log"
        worker = stack.enter_context(running_worker(env, log, LATENCY_SHAPE, sender))
        broker = build_broker(settings)
        stack.callback(broker.close)
        publishing = Runtime.start(settings, handlers={}, migrate=False)
        stack.callback(publishing.close)
        publisher = Publisher(broker, publishing.database, namespace)
        poll = stack.enter_context(psycopg.connect(_psycopg_url(database_url), autocommit=True))
        for n in counts:
            timings: list[Timing] = []
            answered = server.answered()
            for run in range(runs):
                time.sleep(idle)  # let the worker's consumers back off: "idle"
                timing = time_event(publisher, poll, f"lat-{n}-{run}", n, worker)
                if run > 0:  # the first one per N is a warm-up (connections, caches)
                    timings.append(timing)
                print(
                    f"  {series}, N={n} run {run}{' (warm-up)' if run == 0 else ''}: "
                    f"{timing.seen * 1000:.0f} ms (pick-up {timing.received_at * 1000:.0f} ms)",
                    file=sys.stderr,
                    flush=True,
                )
            sent = server.answered()
            succeeded = n * len(timings) - sum(t.not_succeeded for t in timings)
            # At least every succeeded delivery was answered (retries of earlier ones may add).
            if answered is not None and sent is not None and sent - answered < succeeded:
                raise BenchError(f"RP server answered {sent - answered}, expected ≥ {succeeded}")
            rows.append(_latency_row(series, n, timings))
    return rows


def _latency_row(series: str, n: int, timings: Sequence[Timing]) -> LatencyRow:
    seen = sorted(t.seen * 1000 for t in timings)
    pickup = sorted(t.received_at * 1000 for t in timings)
    work = sorted(t.work * 1000 for t in timings)
    notes = []
    failed = sum(t.not_succeeded for t in timings)
    if failed:
        reasons = Counter(error for t in timings for error in t.errors)
        notes.append(
            f"**{failed} of {n * len(timings)} deliveries not succeeded at completion** ("
            + ", ".join(f"{count} x {reason!r}" for reason, count in reasons.most_common(3))
            + "; retried in the background)"
        )
    if n > 256:
        notes.append("more RPs than `max_concurrent_deliveries` (256): two waves of ≥ 50 ms")
    return LatencyRow(
        series=series,
        rps=n,
        runs=len(timings),
        median_ms=percentile(seen, 0.5),
        max_ms=seen[-1],
        pickup_median_ms=percentile(pickup, 0.5),
        pickup_max_ms=pickup[-1],
        work_median_ms=percentile(work, 0.5),
        work_max_ms=work[-1],
        notes="; ".join(notes),
        extra={
            "seen_ms": [round(v, 1) for v in seen],
            "pickup_ms": [round(v, 1) for v in pickup],
            "work_ms": [round(v, 1) for v in work],
            "completed_at_ms": sorted(round(t.completed_at * 1000, 1) for t in timings),
            "not_succeeded": [t.not_succeeded for t in timings],
            "errors": sorted({error for t in timings for error in t.errors}),
        },
    )


# -- b. throughput ---------------------------------------------------------------------


def _final_deliveries(engine: Engine) -> int:
    with engine.connect() as connection:
        final = connection.scalar(
            select(func.count())
            .select_from(Delivery)
            .where(Delivery.status.in_([s.value for s in TERMINAL_DELIVERY_STATUSES]))
        )
    return int(final or 0)


def _completed(engine: Engine) -> int:
    with engine.connect() as connection:
        return completed_events(connection)


def wait_final(
    engine: Engine, events: int, deliveries: int, worker: Worker, timeout: float
) -> None:
    """Poll until ``events`` events are completed and ``deliveries`` deliveries final.

    The deliveries are counted only once the events are: that count reads every delivery
    row, and polled every 50 ms through a run it took ~3% of PostgreSQL's time, on the cores
    the worker measured is using (an event is completed in the transaction that records its
    deliveries' outcomes, so it is rarely waited for).
    """
    deadline = time.monotonic() + timeout
    while True:
        completed = _completed(engine)
        final = _final_deliveries(engine) if completed >= events else None
        if final is not None and final >= deliveries:
            return
        worker.check_alive()
        if time.monotonic() > deadline:
            counted = "" if final is None else f", {final}/{deliveries} deliveries final"
            raise BenchError(
                f"{completed}/{events} events completed{counted} after {timeout:.0f}s:\n"
                f"{worker.output()}"
            )
        time.sleep(THROUGHPUT_POLL)


def postgres_backends(engine: Engine) -> set[int]:
    """PostgreSQL backend pids connected to the benchmark's database (this reader's included)."""
    with engine.connect() as connection:
        pids = connection.execute(
            text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
        ).scalars()
        return {int(pid) for pid in pids}


def wal_position(engine: Engine) -> int:
    """Where PostgreSQL's write-ahead log stands, in bytes: the difference of two is what the
    whole server wrote meanwhile (this benchmark's database alone on a quiet server)."""
    with engine.connect() as connection:
        return int(connection.scalar(text("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")))


def check_deliveries(engine: Engine, expected: int) -> None:
    with engine.connect() as connection:
        by_status = Counter(
            dict(
                connection.execute(
                    select(Delivery.status, func.count()).group_by(Delivery.status)
                ).all()
            )
        )
    if by_status != Counter({DeliveryStatus.SUCCEEDED.value: expected}):
        raise BenchError(f"expected {expected} succeeded deliveries; found {dict(by_status)}")


def py_spy_path() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


@contextmanager
def py_spy(pid: int, output: Path, rate: int) -> Iterator[None]:
    """``py-spy record`` of ``pid`` and its subprocesses while the block runs (raw stacks)."""
    binary = py_spy_path()
    if binary is None:
        raise BenchError("py-spy is not installed (pip install py-spy)")
    log = output.with_suffix(".log")
    with open(log, "wb") as errors:
        process = subprocess.Popen(
            [
                binary,
                "record",
                "--pid",
                str(pid),
                "--subprocesses",
                "--nonblocking",
                "--full-filenames",
                "--threads",
                "--rate",
                str(rate),
                "--format",
                "raw",
                "--output",
                str(output),
            ],
            stdout=errors,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        time.sleep(1.0)  # attaching takes a moment
        if process.poll() is not None:
            raise BenchError(f"py-spy exited: {log.read_text(errors='replace')[-2000:]}")
        yield
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            kill_group(process.pid)
            process.wait(timeout=5)


def _frame_package(frame: str) -> str:
    """Where a py-spy frame ``function (path:line)`` lives: a package, a repo module, stdlib."""
    if "(" not in frame:
        return frame
    path = frame.rsplit("(", 1)[1].rsplit(":", 1)[0]
    parts = Path(path).parts
    if "site-packages" in parts:
        rest = parts[parts.index("site-packages") + 1 :]
        return rest[0].removesuffix(".py") if rest else "?"
    repo = Path(__file__).resolve().parent.parent
    if Path(path).is_relative_to(repo):
        return ".".join(Path(path).relative_to(repo).with_suffix("").parts[:2])
    return f"stdlib {Path(path).stem}"


def _short_frame(frame: str) -> str:
    """``function (path:line)`` with the path cut to its package: ``function (pkg/mod.py)``."""
    function, _, where = frame.rpartition(" (")
    path = where.rsplit(":", 1)[0]
    parts = Path(path).parts
    if "site-packages" in parts:
        path = "/".join(parts[parts.index("site-packages") + 1 :])
    elif Path(path).is_relative_to(REPO):
        path = str(Path(path).relative_to(REPO))
    else:
        path = Path(path).name
    return f"{function} ({path})"


#: Inclusive categories: a sample counts for the first whose marker is in one of its frames.
_CATEGORIES = (
    ("sign a logout token (PyJWT + cryptography)", ("protocols/oidc/tokens.py",)),
    (
        "a failing `import sniffio` (httpcore `current_async_library`, per request)",
        ("current_async_library",),
    ),
    ("HTTP: httpx/httpcore/anyio/h11 (sender loop)", ("/httpx/", "/httpcore/", "/h11/")),
    ("HTTP: aiohttp", ("/aiohttp/",)),
    ("database: SQLAlchemy + psycopg", ("/sqlalchemy/", "/psycopg/")),
    ("broker: dramatiq + redis", ("/dramatiq/", "/redis/")),
    ("logging: structlog", ("/structlog/",)),
    ("event validation: pydantic", ("/pydantic/", "/pydantic_core/")),
)


def profile_report(raw: Path, limit: int = 18) -> str:
    """Summarize py-spy's raw (collapsed) stacks: by category (inclusive) and own package."""
    own: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        code = [f for f in frames if "(" in f and ":" in f.rsplit("(", 1)[1]]
        own[_frame_package(code[-1]) if code else frames[-1]] += count
        functions[_short_frame(code[-1]) if code else frames[-1]] += count
        category = "other"
        for name, markers in _CATEGORIES:
            if any(marker in frame for frame in code for marker in markers):
                category = name
                break
        inclusive[category] += count
        threads["sender loop" if "run_forever" in stack else "actor/consumer threads"] += count
    if total == 0:
        return "py-spy recorded no samples"
    out = [f"{total:,} samples of running (non-idle) Python threads, all worker processes", ""]
    out.append("By activity (a sample counts once, for the first that matches its stack):")
    for name, count in inclusive.most_common():
        out.append(f"  {100 * count / total:5.1f}%  {name}")
    out.append("")
    out.append("By the package of the innermost Python frame (own time):")
    for name, count in own.most_common(limit):
        out.append(f"  {100 * count / total:5.1f}%  {name}")
    out.append("")
    out.append("By innermost Python function (own time):")
    for name, count in functions.most_common(limit):
        out.append(f"  {100 * count / total:5.1f}%  {name}")
    out.append("")
    out.append("By thread kind:")
    for name, count in threads.most_common():
        out.append(f"  {100 * count / total:5.1f}%  {name}")
    return "\n".join(out)


def run_throughput(
    server: RpServer,
    data_dir: Path,
    key_file: Path,
    alg: str,
    events: int,
    profile: Path | None,
    sender: str,
) -> ThroughputRow:
    processes, threads = THROUGHPUT_SHAPE
    warmup = 2 * processes * threads
    namespace = f"lobench{secrets.token_hex(5)}"
    sessions = [(f"tp-{index:06d}", THROUGHPUT_RPS) for index in range(warmup + events)]
    with ExitStack() as stack:
        database_url = stack.enter_context(postgres_database(POSTGRES_URL))
        stack.callback(clean_redis, REDIS_URL, namespace)
        settings = oidc_settings(data_dir, database_url, namespace, key_file)
        runtime = Runtime.start(settings)
        try:
            began = time.perf_counter()
            seed(runtime, server, THROUGHPUT_RPS, sessions)
            seeded = time.perf_counter() - began
        finally:
            runtime.close()
        engine = make_engine(database_url)
        stack.callback(engine.dispose)
        env = oidc_worker_env(data_dir, database_url, namespace, key_file, None)
        log = data_dir / f"worker-throughput-{sender}-{alg}.log"
        worker = stack.enter_context(running_worker(env, log, THROUGHPUT_SHAPE, sender))
        broker = build_broker(settings)
        stack.callback(broker.close)
        publishing = Runtime.start(settings, handlers={}, migrate=False)
        stack.callback(publishing.close)
        publisher = Publisher(broker, publishing.database, namespace)
        payloads = [logout_event(session_id) for session_id, _n in sessions]
        publisher.publish_many(payloads[:warmup])
        wait_final(engine, warmup, warmup * THROUGHPUT_RPS, worker, WORKER_START_TIMEOUT)
        time.sleep(1.0)
        if profile is not None:
            stack.enter_context(py_spy(worker.process.pid, profile, rate=100))
        load = os.getloadavg()[0]
        busy = machine_cpu()
        worker_cpu = group_cpu(worker.process.pid)
        server_cpu = group_cpu(server.process.pid)
        backends = postgres_backends(engine)
        postgres_before = {pid: process_cpu(pid) for pid in backends}
        seal(engine)  # the warm-up's records: not this run's writes
        wal = wal_position(engine)
        start = time.perf_counter()
        publisher.publish_many(payloads[warmup:])
        published = time.perf_counter() - start
        total = warmup + events
        wait_final(engine, total, total * THROUGHPUT_RPS, worker, DRAIN_TIMEOUT)
        elapsed = time.perf_counter() - start
        worker_cpu = group_cpu(worker.process.pid) - worker_cpu
        server_cpu = group_cpu(server.process.pid) - server_cpu
        postgres_cpu = sum(
            max(0.0, process_cpu(pid) - postgres_before.get(pid, 0.0))
            for pid in backends | postgres_backends(engine)
        )
        machine_busy = busy_percent(busy, machine_cpu())
        seal(engine)  # what the workers' rounds had still to seal is part of the run's writes
        wal = wal_position(engine) - wal
        check_deliveries(engine, total * THROUGHPUT_RPS)
        if not worker.alive():
            raise BenchError(f"worker exited during the run:\n{worker.output()}")
        tail = worker.output()
    deliveries = events * THROUGHPUT_RPS
    return ThroughputRow(
        scenario=f"worker {processes}x{threads}, {THROUGHPUT_RPS} RPs per event, "
        + SENDERS[sender]
        + (" (py-spy attached)" if profile is not None else ""),
        keys=alg,
        events=events,
        deliveries=deliveries,
        seconds=elapsed,
        rate=deliveries / elapsed,
        cpu_ms=worker_cpu * 1000 / deliveries,
        busy=machine_busy,
        notes=(
            f"{events / elapsed:,.0f} events/s; CPU = all worker processes'; PostgreSQL "
            f"backends {postgres_cpu * 1000 / deliveries:.2f} ms CPU/delivery, WAL "
            f"{wal / deliveries:,.0f} bytes/delivery; RP server "
            f"{server_cpu * 1e6 / deliveries:,.0f} µs CPU/delivery; publishing took "
            f"{published:.2f}s"
        ),
        extra={
            "worker_cpu_seconds": round(worker_cpu, 3),
            "server_cpu_seconds": round(server_cpu, 3),
            "postgres_cpu_seconds": round(postgres_cpu, 3),
            "postgres_wal_bytes": wal,
            "machine_busy_percent": machine_busy,
            "loadavg_1m_before": load,
            "publish_seconds": round(published, 3),
            "seed_seconds": round(seeded, 3),
            "warmup_events": warmup,
            "worker_log_tail": tail,
        },
    )


def floor_rows(server: RpServer, key_dir: Path, alg: Algorithm) -> list[ThroughputRow]:
    """The floor of ``bench.http_transports``: signing alone, and signing + POST (aiohttp)."""
    build = request_builder(alg, key_dir / "floor", server.url)
    signing = measure_signing(alg, build, seconds=2.0, repeats=1)
    samples = floor_sign_and_post("aiohttp", build, server, Budget(3000, 1, 4.0))
    post = samples[0]
    return [
        ThroughputRow(
            scenario="floor: build (sign) requests, 1 thread, no I/O",
            keys=alg,
            events=None,
            deliveries=signing.requests,
            seconds=signing.seconds,
            rate=signing.rate,
            cpu_ms=(signing.cpu_us or 0) / 1000,
            busy=signing.busy,
            notes="`OidcHandler.backchannel_request`"
            + (
                "; RSA signing releases the GIL, so 2 cores give at most about twice this"
                if alg == "RS256"
                else ""
            ),
        ),
        ThroughputRow(
            scenario="floor: build + POST, 64 in flight, bare asyncio loop (aiohttp)",
            keys=alg,
            events=None,
            deliveries=post.count,
            seconds=post.seconds,
            rate=post.rate,
            cpu_ms=post.cpu * 1000 / post.count,
            busy=post.busy,
            notes="one process, one thread: no broker, no database",
        ),
    ]


# -- main ------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = new_parser("fanout", __doc__)
    parser.add_argument(
        "--only", choices=("latency", "throughput"), help="run one part only (default: both)"
    )
    parser.add_argument(
        "--rps",
        default="1,10,100,500",
        help="latency: numbers of RPs per session, comma-separated (default 1,10,100,500)",
    )
    parser.add_argument(
        "--repeats", type=int, default=5, help="latency: timed events per N (default 5)"
    )
    parser.add_argument(
        "--idle",
        type=float,
        default=1.5,
        help="latency: seconds the worker idles before each event (default 1.5)",
    )
    parser.add_argument(
        "--worker-timeout-ms",
        action="append",
        default=None,
        metavar="MS|default",
        help="latency: one series per value; an integer sets dramatiq_worker_timeout in the "
        "worker's environment (repeatable; default: one series with dramatiq's default)",
    )
    parser.add_argument(
        "--latency-alg",
        choices=("RS256", "ES256"),
        default="RS256",
        help="latency: the signing key's algorithm (default RS256)",
    )
    parser.add_argument(
        "--events", type=int, default=600, help="throughput: events per run (default 600)"
    )
    parser.add_argument(
        "--algs", default="RS256,ES256", help="throughput: key algorithms (default RS256,ES256)"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="throughput: attach py-spy to the worker and print where the time goes",
    )
    parser.add_argument(
        "--no-nginx", action="store_true", help="throughput: use the Python server for the RPs"
    )
    parser.add_argument(
        "--sender",
        choices=tuple(SENDERS),
        default="product",
        help="product: the worker as shipped (default); httpx-aiohttp: the worker's processes "
        "patch `Runtime.sender` to send through httpx over `httpx_aiohttp.AiohttpTransport`, "
        "the sender before aiohttp was called directly (bench only, for comparison)",
    )
    add_json_option(parser, DEFAULT_JSON)
    args = parser.parse_args(argv)
    try:
        args.rps_list = [int(v) for v in args.rps.split(",") if v.strip()]
        args.timeouts = [
            None if v == "default" else int(v) for v in (args.worker_timeout_ms or ["default"])
        ]
    except ValueError as exc:
        parser.error(str(exc))
    args.alg_list = [v.strip() for v in args.algs.split(",") if v.strip()]
    if any(a not in ("RS256", "ES256") for a in args.alg_list):
        parser.error("--algs: RS256 and/or ES256")
    if not args.rps_list or min(args.rps_list) < 1 or args.repeats < 1 or args.events < 10:
        parser.error("use at least 1 RP, 1 repeat and 10 events")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    if arguments[:1] == [WORKER_CLI_FLAG]:
        return _worker_cli(arguments[1:])
    args = parse_args(argv)
    configure_logging("WARNING", "json")
    exit_on_sigterm()  # clean up on SIGTERM too
    command = command_line("fanout", argv)
    info = machine(postgres_version(POSTGRES_URL), redis_version(REDIS_URL))
    print(f"machine: {machine_line(info)}", file=sys.stderr)
    latency: list[LatencyRow] = []
    throughput: list[ThroughputRow] = []
    profiles: dict[str, str] = {}
    notes: list[str] = []
    with ExitStack() as cleanup:
        cleanup.callback(forget_heartbeats, REDIS_URL, heartbeats(REDIS_URL))
        data_dir = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="lo-bench-")))
        keys = {
            alg: generate_key_file(data_dir / f"keys-{alg.lower()}", alg)
            for alg in ("RS256", "ES256")
        }
        if args.only in (None, "latency"):
            print("running latency ...", file=sys.stderr, flush=True)
            with python_rp_server(max(args.rps_list), LATENCY_RP_DELAY_MS) as server:
                info["latency_server"] = server.description
                for timeout in args.timeouts:
                    latency += run_latency(
                        server,
                        data_dir,
                        keys[args.latency_alg],
                        args.rps_list,
                        args.repeats,
                        args.idle,
                        timeout,
                        args.sender,
                    )
        if args.only in (None, "throughput"):
            with light_rp_server(THROUGHPUT_RPS, use_nginx=not args.no_nginx) as server:
                info["throughput_server"] = server.description
                notes += server.notes
                for note in server.notes:
                    print(f"NOTE: {note}", file=sys.stderr)
                for alg in args.alg_list:
                    algorithm: Algorithm = "RS256" if alg == "RS256" else "ES256"
                    print(f"running throughput {alg} ...", file=sys.stderr, flush=True)
                    began = time.perf_counter()
                    raw = data_dir / f"py-spy-{alg}.txt" if args.profile else None
                    throughput.append(
                        run_throughput(
                            server, data_dir, keys[alg], alg, args.events, raw, args.sender
                        )
                    )
                    print(
                        f"  {throughput[-1].rate:,.0f} deliveries/s, done in "
                        f"{time.perf_counter() - began:.1f}s",
                        file=sys.stderr,
                        flush=True,
                    )
                    if raw is not None:
                        profiles[alg] = profile_report(raw)
                    print(f"running floor {alg} ...", file=sys.stderr, flush=True)
                    throughput += floor_rows(server, data_dir, algorithm)
    print(f"Machine: {machine_line(info)}\n")
    print(f"Command: `{command}`\n")
    for note in notes:
        print(f"**Note: {note}.**\n")
    if latency:
        print(
            f"Latency RPs: {info['latency_server']}; worker {LATENCY_SHAPE[0]}x{LATENCY_SHAPE[1]},"
        )
        print(f"{args.latency_alg} keys; one warm-up event per N, not counted.\n")
        print(latency_table(latency))
        print()
        for line in latency_ratios(latency):
            print(f"* {line}")
        print(
            "* Pick-up: the worker's Redis consumers wait on the wake-up notice each enqueue "
            "PUBLISHes (`workers/redis_wakeup.py`); with `redis_wakeup = false`, dramatiq's own "
            "consumer sleeps between empty fetches, backing off up to its `worker_timeout` "
            "(1000 ms), so an idle worker then picks an event up only after up to ~1 s.\n"
        )
    if throughput:
        print(f"Throughput RPs: {info['throughput_server']}.\n")
        print(throughput_table(throughput))
        print()
        print(_throughput_summary(throughput))
    for alg, report in profiles.items():
        print(f"\npy-spy, throughput run with {alg} keys:\n\n```\n{report}\n```")
    if args.json:
        document = {
            "machine": info,
            "command": command,
            "latency": [asdict(row) for row in latency],
            "latency_ratios": latency_ratios(latency),
            "throughput": [asdict(row) for row in throughput],
            "profiles": profiles,
        }
        write_json(args.json, document)
    return 0


def _throughput_summary(rows: Sequence[ThroughputRow]) -> str:
    lines = []
    for alg in dict.fromkeys(row.keys for row in rows):
        measured = next((r for r in rows if r.keys == alg and r.events is not None), None)
        floors = [r for r in rows if r.keys == alg and r.events is None]
        if measured is None or not floors:
            continue
        sign, post = floors[0], floors[-1]
        line = (
            f"* {alg}: {measured.rate:,.0f} deliveries/s = {measured.rate / post.rate:.0%} of the "
            f"one-loop sign + POST floor ({post.rate:,.0f}/s) and "
            f"{measured.rate / sign.rate:.0%} of signing alone on one thread ({sign.rate:,.0f}/s)"
        )
        if alg == "RS256":
            line += (
                f"; target {TARGET_DELIVERIES_PER_SECOND:,}/s: "
                f"{measured.rate / TARGET_DELIVERIES_PER_SECOND:.0%} of it. Signing alone at "
                f"{TARGET_DELIVERIES_PER_SECOND:,}/s would take "
                f"{TARGET_DELIVERIES_PER_SECOND / sign.rate:.1f} cores of this machine"
            )
        lines.append(line)
    return "\n".join(lines)


# -- the sender shim (--sender httpx-aiohttp) --------------------------------------------------


def install_sender_shim() -> None:
    """Make ``Runtime.sender()`` send through httpx over ``AiohttpTransport``.

    Only for comparing with the previous sender: the limits and timeouts are the settings', as in
    ``Runtime.sender``; the aiohttp session keeps no cookies and is made inside the sender's
    loop on first use.
    """
    from httpx_aiohttp import AiohttpTransport

    from bench.http_transports import aiohttp_session
    from orchestrator.runtime import Runtime
    from orchestrator.sender import HttpSender

    def sender(self: Runtime) -> HttpSender:
        with self._lock:
            if self._sender is None:
                s = self.settings
                limit = s.max_concurrent_deliveries
                self._sender = HttpSender(
                    timeout=s.delivery_timeout,
                    body_limit=s.response_body_limit,
                    max_concurrency=limit,
                    per_host=s.max_concurrent_per_host,
                    transport=AiohttpTransport(client=lambda: aiohttp_session(limit)),
                )
            return self._sender

    Runtime.sender = sender  # type: ignore[method-assign]
    print(f"{SHIM_MARKER} {os.getpid()}", file=sys.stderr, flush=True)


def check_shim(worker: Worker, processes: int) -> None:
    """Every worker process said it installed the shim (``--sender httpx-aiohttp``)."""
    text = worker.log.read_text(encoding="utf-8", errors="replace")
    pids = {line.split()[-1] for line in text.splitlines() if line.startswith(SHIM_MARKER)}
    if len(pids) < processes:
        raise BenchError(f"the sender shim is installed in {len(pids)} of {processes} processes")


def _worker_cli(arguments: list[str]) -> int:
    """``logout-orchestrator ARGS`` in this process (the shim is installed on import)."""
    from workers.cli import main as cli

    sys.argv = ["logout-orchestrator", *arguments]
    cli()
    return 0


# Worker processes started by ``--sender httpx-aiohttp`` (and the processes their supervisor spawns,
# which import this module as ``__mp_main__``) install the shim here.
if os.environ.get(SENDER_SHIM_ENV) == "httpx-aiohttp":
    install_sender_shim()

if __name__ == "__main__":
    sys.exit(main())
