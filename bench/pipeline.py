"""Throughput of the event pipeline, side by side in one run.

* in process: ``LogoutEngine.handle`` called directly (no broker), on SQLite and PostgreSQL;
* publish only: ``Publisher.publish_many`` to Redis with no worker consuming;
* end to end: a real ``logout-orchestrator worker`` subprocess, idle and warmed up, consuming
  events published to Redis, until every event is ``completed`` in PostgreSQL.

Every event is a ``logout.user`` that ends one IdP session with two provider sessions whose
protocol has no handler, so both deliveries end ``skipped`` and nothing goes over HTTP: what is
measured is the broker, the database and the pipeline's own code.

Run ``python -m bench.pipeline --help``; see ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import secrets
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import sqlalchemy
from sqlalchemy import Engine, event, func, select

from bench.common import (
    DRAIN_TIMEOUT,
    POSTGRES_URL,
    REDIS_URL,
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
    fmt,
    forget_heartbeats,
    group_cpu,
    heartbeats,
    logout_event,
    machine_cpu,
    machine_info,
    new_parser,
    percentile,
    postgres_database,
    postgres_version,
    redis_version,
    render_table,
    wait_consuming,
    worker_cli,
    worker_command,
    worker_env,
    worker_process,
    write_json,
)
from bench.common import (
    machine_line as common_machine_line,
)
from orchestrator import HandleResult, Publisher, Runtime
from orchestrator.logging import configure_logging
from orchestrator.store import (
    Delivery,
    DeliveryStatus,
    make_engine,
)
from schemas import ProviderConfig, ProviderSessionRecord, SessionRecord
from workers import build_broker

__all__ = ["main"]

DEFAULT_JSON = RESULTS / "pipeline.json"

#: Two disabled providers per session, of a protocol no handler serves: deliveries end
#: ``skipped``.
PROVIDERS = ("bench-a", "bench-b")
NO_HANDLER = "bench-none"
#: Sessions per ``import_records`` transaction while seeding.
SEED_CHUNK = 1000
#: How often the end-to-end run polls the ``events`` table.
POLL_INTERVAL = 0.05
#: (processes, threads) of the end-to-end runs.
WORKER_SHAPES = ((1, 8), (2, 8))


# -- results ---------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the table."""

    scenario: str
    backend: str
    events: int
    seconds: float
    rate: float
    p50_ms: float | None = None
    p99_ms: float | None = None
    cpu_ms: float | None = None
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def markdown_table(rows: Sequence[Row]) -> str:
    """The results as a Markdown table."""
    columns = (
        "scenario",
        "backend",
        "events",
        "time (s)",
        "events/s",
        "p50 (ms)",
        "p99 (ms)",
        "CPU ms/event",
        "notes",
    )
    return render_table(
        columns,
        "llrrrrrrl",
        (
            (
                row.scenario,
                row.backend,
                f"{row.events:,}",
                f"{row.seconds:.2f}",
                f"{row.rate:,.0f}",
                fmt(row.p50_ms),
                fmt(row.p99_ms),
                fmt(row.cpu_ms),
                row.notes,
            )
            for row in rows
        ),
    )


# -- machine ---------------------------------------------------------------------------


def machine(postgres_version: str | None, redis_version: str | None) -> dict[str, Any]:
    """What the numbers were measured on."""
    return machine_info(
        {
            "sqlalchemy": sqlalchemy.__version__,
            "sqlite": sqlite3.sqlite_version,
            "postgresql": postgres_version,
            "redis": redis_version,
        }
    )


def machine_line(info: dict[str, Any]) -> str:
    return common_machine_line(
        info,
        f"SQLAlchemy {info['sqlalchemy']}, SQLite {info['sqlite']}, "
        f"PostgreSQL {info['postgresql'] or 'n/a'}, Redis {info['redis'] or 'n/a'}",
    )


# -- data ------------------------------------------------------------------------------


def seed(runtime: Runtime, prefix: str, count: int) -> list[str]:
    """Providers, then ``count`` IdP sessions with one provider session per provider."""
    registry = runtime.registry
    # Disabled: the registry refuses an enabled provider no handler serves.
    registry.upsert_providers(
        [ProviderConfig(name=p, protocol=NO_HANDLER, enabled=False) for p in PROVIDERS]
    )
    ids = [f"{prefix}-{index:07d}" for index in range(count)]
    for start in range(0, count, SEED_CHUNK):
        records: list[SessionRecord | ProviderSessionRecord] = []
        for session_id in ids[start : start + SEED_CHUNK]:
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
                        "provider": provider,
                        "sid": f"{provider}-{session_id}",
                    }
                )
                for provider in PROVIDERS
            )
        registry.import_records(records)
    return ids


def check_outcome(engine: Engine, events: int) -> None:
    """Every event completed, every delivery skipped: the run measured what it claims to."""
    with engine.connect() as connection:
        completed = completed_events(connection)
        by_status = dict(
            connection.execute(
                select(Delivery.status, func.count()).group_by(Delivery.status)
            ).all()
        )
    skipped = by_status.get(DeliveryStatus.SKIPPED, 0)
    if completed != events or skipped != events * len(PROVIDERS) or len(by_status) != 1:
        raise BenchError(
            f"expected {events} completed events and {events * len(PROVIDERS)} skipped "
            f"deliveries; found {completed} completed, deliveries {by_status}"
        )


def _count_statements(engine: Engine) -> dict[str, int]:
    """Count SQL statements and commits on ``engine`` into the returned dict until cleared."""
    counts = {"statements": 0, "commits": 0}

    def statement(*_: Any) -> None:
        if counts:
            counts["statements"] += 1

    def commit(*_: Any) -> None:
        if counts:
            counts["commits"] += 1

    event.listen(engine, "before_cursor_execute", statement)
    event.listen(engine, "commit", commit)
    return counts


def _no_schedule(_delivery_id: str, _delay: float) -> None:
    raise BenchError("a delivery was scheduled for retry; deliveries must end skipped")


# -- 1. in process ---------------------------------------------------------------------


def run_in_process(
    backend: str,
    database_url: str,
    data_dir: Path,
    events: int,
    warmup: int,
    profile: cProfile.Profile | None = None,
    batch: int = 1,
) -> Row:
    """``LogoutEngine.handle`` called ``events`` times in a row, after ``warmup`` calls.

    With ``batch`` > 1, ``handle_batch`` of that many events at a time instead (as a worker
    process under load hands them over); latencies are then per batch.
    """
    runtime = Runtime.start(bench_settings(data_dir, database_url), handlers={})
    try:
        began = time.perf_counter()
        ids = seed(runtime, "ip", warmup + events)
        seeded = time.perf_counter() - began
        processor = runtime.processor(schedule=_no_schedule)
        work = [(logout_event(session_id), str(uuid.uuid4())) for session_id in ids]
        for raw, message_id in work[:warmup]:
            if processor.handle(raw, message_id) is not HandleResult.COMPLETED:
                raise BenchError("a warm-up event was not completed")
        latencies: list[int] = []
        results: list[HandleResult] = []
        clock = time.perf_counter_ns
        statements = _count_statements(runtime.engine)
        load = os.getloadavg()[0]
        busy = machine_cpu()
        if profile is not None:
            profile.enable()
        cpu = time.process_time()
        start = clock()
        timed = work[warmup:]
        for first in range(0, len(timed), batch):
            chunk = timed[first : first + batch]
            before = clock()
            if batch == 1:
                results.append(processor.handle(*chunk[0]))
            else:
                results.extend(processor.handle_batch(chunk))
            latencies.append(clock() - before)
        elapsed = (clock() - start) / 1e9
        cpu = time.process_time() - cpu
        if profile is not None:
            profile.disable()
        counted = dict(statements)
        statements.clear()  # stop counting (the outcome check below is not the pipeline)
        machine_busy = busy_percent(busy, machine_cpu())
        if any(result is not HandleResult.COMPLETED for result in results):
            raise BenchError(f"{backend}: not every event was completed")
        check_outcome(runtime.engine, warmup + events)
    finally:
        runtime.close()
    latencies.sort()
    per = "event" if batch == 1 else f"batch of {batch}"
    return Row(
        scenario="in-process `handle()`" if batch == 1 else f"in-process `handle_batch({batch})`",
        backend=backend,
        events=events,
        seconds=elapsed,
        rate=events / elapsed,
        p50_ms=percentile(latencies, 0.50) / 1e6,
        p99_ms=percentile(latencies, 0.99) / 1e6,
        cpu_ms=cpu * 1000 / events,
        notes=(
            f"1 thread; {counted.get('statements', 0) / events:.1f} SQL statements in "
            f"{counted.get('commits', 0) / events:.2f} transactions per event; latency per {per}; "
            f"machine {fmt(machine_busy, 0)}% busy"
        ),
        extra={
            "cpu_seconds": round(cpu, 3),
            "statements_per_event": counted.get("statements", 0) / events,
            "commits_per_event": counted.get("commits", 0) / events,
            "machine_busy_percent": machine_busy,
            "loadavg_1m_before": load,
            "seed_seconds": round(seeded, 3),
            "warmup": warmup,
            "max_ms": latencies[-1] / 1e6,
            "mean_ms": sum(latencies) / len(latencies) / 1e6,
        },
    )


# -- 2. broker -------------------------------------------------------------------------


def run_publish_only(redis_url: str, admin_url: str, data_dir: Path, events: int) -> Row:
    """``Publisher.publish_many`` of ``events`` events (outbox on PostgreSQL, then Redis) with
    no worker consuming them."""
    namespace = f"lobench{secrets.token_hex(5)}"
    payloads = [logout_event(f"pub-{index}") for index in range(events)]
    with ExitStack() as stack:
        database_url = stack.enter_context(postgres_database(admin_url))
        stack.callback(clean_redis, redis_url, namespace)
        settings = bench_settings(data_dir, database_url, broker_url=redis_url, namespace=namespace)
        runtime = Runtime.start(settings, handlers={})  # migrates
        stack.callback(runtime.close)
        broker = build_broker(settings)
        stack.callback(broker.close)
        publisher = Publisher(broker, runtime.database, namespace)
        publisher.publish_many(payloads[:10])  # connection and Lua scripts, not timed
        cpu = time.process_time()
        start = time.perf_counter()
        publisher.publish_many(payloads[10:])
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu
    sent = len(payloads) - 10
    return Row(
        scenario="publish only (no worker)",
        backend="Redis",
        events=sent,
        seconds=elapsed,
        rate=sent / elapsed,
        cpu_ms=cpu * 1000 / sent,
        notes="`publish_many`: validate, record 500 events per outbox transaction, then per "
        "event 1 Redis round trip to enqueue and 1 to PUBLISH the wake-up notice; CPU = "
        "publisher's",
    )


def _count_completed(engine: Engine) -> int:
    with engine.connect() as connection:
        return completed_events(connection)


def wait_completed(
    engine: Engine, target: int, worker: Worker, timeout: float, on_first: Callable[[], None]
) -> None:
    """Poll every ``POLL_INTERVAL`` until ``target`` events are completed."""
    deadline = time.monotonic() + timeout
    seen_first = False
    baseline = _count_completed(engine)
    while True:
        done = _count_completed(engine)
        if not seen_first and done > baseline:
            seen_first = True
            on_first()
        if done >= target:
            return
        worker.check_alive()
        if time.monotonic() > deadline:
            raise BenchError(
                f"only {done}/{target} events completed after {timeout:.0f}s; worker log:\n"
                f"{worker.output()}"
            )
        time.sleep(POLL_INTERVAL)


def run_end_to_end(
    admin_url: str,
    redis_url: str,
    data_dir: Path,
    processes: int,
    threads: int,
    events: int,
) -> Row:
    """Publish ``events`` events to an idle, warmed-up worker; time until all are completed."""
    warmup = max(20, 2 * processes * threads)
    namespace = f"lobench{secrets.token_hex(5)}"
    with ExitStack() as stack:
        database_url = stack.enter_context(postgres_database(admin_url))
        stack.callback(clean_redis, redis_url, namespace)
        settings = bench_settings(data_dir, database_url, broker_url=redis_url, namespace=namespace)
        runtime = Runtime.start(settings, handlers={})  # migrates
        try:
            began = time.perf_counter()
            ids = seed(runtime, "e2e", warmup + events)
            seeded = time.perf_counter() - began
        finally:
            runtime.close()
        engine = make_engine(database_url)
        stack.callback(engine.dispose)
        env = worker_env(
            broker_url=redis_url,
            database_url=database_url,
            namespace=namespace,
            data_dir=str(data_dir),
            log_level="WARNING",
            protocols="[]",
        )
        log = data_dir / f"worker-{processes}x{threads}.log"
        before = heartbeats(redis_url)
        stack.callback(forget_heartbeats, redis_url, before)
        worker = stack.enter_context(
            worker_process([str(worker_cli()), *worker_command(processes, threads)], env, log)
        )
        wait_consuming(redis_url, before, processes, worker)
        broker = build_broker(settings)
        stack.callback(broker.close)
        publishing = Runtime.start(settings, handlers={}, migrate=False)
        stack.callback(publishing.close)
        publisher = Publisher(broker, publishing.database, namespace)
        payloads = [logout_event(session_id) for session_id in ids]
        # Warm-up: every process consumes; have them handle events, then let them go idle.
        publisher.publish_many(payloads[:warmup])
        wait_completed(engine, warmup, worker, WORKER_START_TIMEOUT, lambda: None)
        time.sleep(1.0)
        first: list[float] = []
        load = os.getloadavg()[0]
        busy = machine_cpu()
        worker_cpu = group_cpu(worker.process.pid)
        start = time.perf_counter()
        publisher.publish_many(payloads[warmup:])
        published = time.perf_counter() - start
        wait_completed(
            engine,
            warmup + events,
            worker,
            DRAIN_TIMEOUT,
            lambda: first.append(time.perf_counter() - start),
        )
        elapsed = time.perf_counter() - start
        worker_cpu = group_cpu(worker.process.pid) - worker_cpu
        machine_busy = busy_percent(busy, machine_cpu())
        check_outcome(engine, warmup + events)
        if not worker.alive():
            raise BenchError(f"worker exited during the run:\n{worker.output()}")
        errors = worker.output()
    return Row(
        scenario=f"end to end, worker {processes}x{threads}",
        backend="Redis + PostgreSQL",
        events=events,
        seconds=elapsed,
        rate=events / elapsed,
        cpu_ms=worker_cpu * 1000 / events,
        notes=(
            f"CPU = all worker processes'; machine {fmt(machine_busy, 0)}% busy; "
            f"publishing took {published:.2f}s ({events / published:,.0f}/s) of it; "
            f"first completion seen at {first[0] if first else float('nan'):.2f}s"
        ),
        extra={
            "worker_cpu_seconds": round(worker_cpu, 3),
            "machine_busy_percent": machine_busy,
            "loadavg_1m_before": load,
            "processes": processes,
            "threads": threads,
            "publish_seconds": round(published, 3),
            "first_completed_seconds": round(first[0], 3) if first else None,
            "seed_seconds": round(seeded, 3),
            "warmup": warmup,
            "worker_log_tail": errors,
        },
    )


# -- main ------------------------------------------------------------------------------


def _package(filename: str, function: str) -> str:
    """Where a profiled function lives: a package, a module of the repo, or a C call."""
    if filename == "~":  # a C function, e.g. "<method 'execute' of 'sqlite3.Cursor' objects>"
        if " of '" not in function:
            return "C: builtins"
        owner = function.split(" of '", 1)[1].split("'", 1)[0]
        return f"C: {owner.rsplit('.', 1)[0] if '.' in owner else 'builtins'}"
    path = Path(filename)
    parts = path.parts
    if "site-packages" in parts:
        rest = parts[parts.index("site-packages") + 1 :]
        top = rest[0].removesuffix(".py") if rest else "?"
        if top == "sqlalchemy" and len(rest) > 2:
            return f"sqlalchemy.{rest[1]}"
        return top
    repo = Path(__file__).resolve().parent.parent
    if path.is_relative_to(repo):
        return ".".join(path.relative_to(repo).with_suffix("").parts)
    return f"stdlib {path.stem}"


def _profile_report(profile: cProfile.Profile, events: int, limit: int = 25) -> str:
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    own: dict[str, float] = {}
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for (filename, _line, function), (_cc, _nc, tottime, _ct, _callers) in raw.items():
        key = _package(filename, function)
        own[key] = own.get(key, 0.0) + tottime
    total = sum(own.values()) or 1.0
    out.write("Own time by package, per event (profiled: about 2-3x slower than unprofiled)\n")
    for key, seconds in sorted(own.items(), key=lambda item: -item[1])[:limit]:
        out.write(f"  {100 * seconds / total:5.1f}%  {1000 * seconds / events:7.2f} ms  {key}\n")
    out.write(f"\n(cumulative and own time for {events} events; divide by {events} per event)\n")
    stats.sort_stats(pstats.SortKey.CUMULATIVE).print_stats(limit)
    stats.sort_stats(pstats.SortKey.TIME).print_stats(limit)
    return out.getvalue()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = new_parser("pipeline", __doc__)
    parser.add_argument(
        "--events", type=int, default=500, help="events per in-process run (default 500)"
    )
    parser.add_argument(
        "--e2e-events",
        type=int,
        default=None,
        help="events per end-to-end run and for publish only (default: --events)",
    )
    add_json_option(parser, DEFAULT_JSON)
    parser.add_argument(
        "--in-process-only", action="store_true", help="skip publish-only and end-to-end runs"
    )
    parser.add_argument(
        "--profile",
        choices=("sqlite", "postgresql"),
        help="cProfile the in-process run on this backend and print where the time goes "
        "(profiled timings are slower; nothing else runs)",
    )
    args = parser.parse_args(argv)
    if args.events < 10 or (args.e2e_events is not None and args.e2e_events < 20):
        parser.error("use at least 10 in-process and 20 end-to-end events")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    e2e_events: int = args.e2e_events or args.events
    configure_logging("WARNING", "json")  # as the worker runs: audit lines are not printed
    exit_on_sigterm()  # clean up on SIGTERM too
    info = machine(postgres_version(POSTGRES_URL), redis_version(REDIS_URL))
    warmup = max(10, args.events // 20)
    rows: list[Row] = []
    command = command_line("pipeline", argv)
    print(f"machine: {machine_line(info)}", file=sys.stderr)
    with ExitStack() as cleanup:
        # Publishers and workers alike leave their id in dramatiq's heartbeat set.
        cleanup.callback(forget_heartbeats, REDIS_URL, heartbeats(REDIS_URL))
        tmp = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="lo-bench-"))
        data_dir = Path(tmp)
        if args.profile:
            profile = cProfile.Profile()
            if args.profile == "sqlite":
                row = run_in_process(
                    "SQLite",
                    f"sqlite:///{data_dir / 'bench.db'}",
                    data_dir,
                    args.events,
                    warmup,
                    profile,
                )
            else:
                with postgres_database(POSTGRES_URL) as url:
                    row = run_in_process("PostgreSQL", url, data_dir, args.events, warmup, profile)
            print(markdown_table([row]))
            print(_profile_report(profile, args.events))
            return 0
        steps: list[tuple[str, Callable[[], Row]]] = [
            (
                "in-process SQLite",
                lambda: run_in_process(
                    "SQLite", f"sqlite:///{data_dir / 'bench.db'}", data_dir, args.events, warmup
                ),
            ),
            ("in-process PostgreSQL", lambda: _in_process_postgres(data_dir, args.events, warmup)),
            (
                "in-process SQLite, batches of 32",
                lambda: run_in_process(
                    "SQLite",
                    f"sqlite:///{data_dir / 'batch.db'}",
                    data_dir,
                    args.events,
                    warmup,
                    batch=32,
                ),
            ),
            (
                "in-process PostgreSQL, batches of 32",
                lambda: _in_process_postgres(data_dir, args.events, warmup, batch=32),
            ),
        ]
        if not args.in_process_only:
            steps.append(
                (
                    "publish only",
                    lambda: run_publish_only(REDIS_URL, POSTGRES_URL, data_dir, e2e_events),
                )
            )
            for processes, threads in WORKER_SHAPES:
                steps.append(
                    (
                        f"end to end {processes}x{threads}",
                        partial(
                            run_end_to_end,
                            POSTGRES_URL,
                            REDIS_URL,
                            data_dir,
                            processes,
                            threads,
                            e2e_events,
                        ),
                    )
                )
        for name, step in steps:
            print(f"running {name} ...", file=sys.stderr, flush=True)
            began = time.perf_counter()
            rows.append(step())
            print(f"  done in {time.perf_counter() - began:.1f}s", file=sys.stderr, flush=True)
    print(f"Machine: {machine_line(info)}\n")
    print(f"Command: `{command}`\n")
    print(markdown_table(rows))
    if args.json:
        write_json(
            args.json,
            {"machine": info, "command": command, "results": [asdict(row) for row in rows]},
        )
    return 0


def _in_process_postgres(data_dir: Path, events: int, warmup: int, batch: int = 1) -> Row:
    with postgres_database(POSTGRES_URL) as url:
        return run_in_process("PostgreSQL", url, data_dir, events, warmup, batch=batch)


if __name__ == "__main__":
    sys.exit(main())
