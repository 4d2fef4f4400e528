"""Publish to plan available: how long an IdP waits for a logout's front-channel stage plan.

A real ``logout-orchestrator worker`` (Redis broker, PostgreSQL, OIDC and SAML handlers) runs
idle. For each of N logouts the benchmark publishes a ``logout.user`` with a ``plan_id`` for a
session with two OIDC front-channel RPs, one SAML SP (signed HTTP-Redirect request in an
iframe) and one back-channel RP, and times ``LogoutWaiter.wait_plan`` from just before the
publish until it returns the plan (woken by PostgreSQL ``NOTIFY``). It then waits for the
logout to complete and idles ``--gap`` seconds, so every publish meets an idle worker.

Series, in one run: the shipped configuration, idle; the same under a background load of other
logouts (``--load`` per second, each with a back-channel RP, published from another thread);
and dramatiq's own Redis polling (``redis_wakeup = false``), idle, with fewer logouts, as the
"before".
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bench.common import (
    REDIS_URL,
    REPO,
    BenchError,
    add_json_option,
    bench_settings,
    clean_redis,
    command_line,
    exit_on_sigterm,
    fmt,
    forget_heartbeats,
    heartbeats,
    machine_info,
    machine_line,
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
from bench.rp_server import RpServer, python_rp_server
from orchestrator.logging import configure_logging
from orchestrator.publishing import Publisher
from orchestrator.runtime import Runtime
from orchestrator.settings import Settings
from protocols.saml.identity import self_signed
from schemas import ProviderConfig
from workers.broker import build_broker

DEFAULT_JSON = REPO / "bench" / "results" / "plan_latency.json"
ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
TARGET_P99_MS = 20.0


def _sp_certificate(directory: Path) -> Path:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = directory / "sp-cert.pem"
    path.write_bytes(self_signed(key, datetime.now(UTC)).public_bytes(serialization.Encoding.PEM))
    return path


def _providers(server: RpServer, cert: Path) -> list[ProviderConfig]:
    tables: list[dict[str, Any]] = [
        {
            "name": f"fc-{n}",
            "protocol": "oidc",
            "client_id": f"fc-{n}",
            "frontchannel_logout_uri": f"https://fc{n}.example.com/logout",
            "logout_method": "frontchannel",
        }
        for n in (1, 2)
    ]
    tables.append(
        {
            "name": "hr",
            "protocol": "saml",
            "entity_id": "https://hr.example.com/sp",
            "sls_url": "https://hr.example.com/sls",
            "sls_binding": "redirect",
            "logout_method": "frontchannel_iframe",
            "sp_certificate": str(cert),
        }
    )
    tables.append(
        {
            "name": "bc",
            "protocol": "oidc",
            "client_id": "bc",
            "backchannel_logout_uri": server.url(0),
            "allow_http": True,
        }
    )
    return [ProviderConfig.model_validate(t) for t in tables]


def _seed(runtime: Runtime, sessions: Sequence[str], background: Sequence[str]) -> None:
    lines: list[str] = []
    for sid in sessions:
        lines.append(json.dumps({"kind": "session", "session_id": sid, "user_id": f"u-{sid}"}))
        for provider in ("fc-1", "fc-2", "hr", "bc"):
            ids = (
                {"name_id": f"{sid}@example.com", "session_index": f"idx-{sid}"}
                if provider == "hr"
                else {"sid": f"{provider}-{sid}", "sub": f"u-{sid}"}
            )
            lines.append(
                json.dumps(
                    {"kind": "provider_session", "session_id": sid, "provider": provider, **ids}
                )
            )
    for sid in background:
        lines.append(json.dumps({"kind": "session", "session_id": sid, "user_id": f"u-{sid}"}))
        lines.append(
            json.dumps(
                {"kind": "provider_session", "session_id": sid, "provider": "bc", "sid": sid}
            )
        )
    for start in range(0, len(lines), 5000):
        runtime.registry.import_lines(lines[start : start + 5000])


def _event(session_id: str, plan_id: str | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "logout.user",
        "event_id": str(uuid.uuid4()),
        "occurred_at": datetime.now(UTC).isoformat(),
        "initiator": "user",
        "session_id": session_id,
    }
    if plan_id is not None:
        event["plan_id"] = plan_id
    return event


@contextmanager
def _background(
    settings: Settings, runtime: Runtime, sessions: list[str], rate: float
) -> Iterator[list[int]]:
    """Publish logouts of ``sessions`` at ``rate`` per second from another thread."""
    sent = [0]
    stop = threading.Event()
    broker = build_broker(settings)
    publisher = Publisher(broker, runtime.database, settings.namespace)

    def run() -> None:
        interval = 1.0 / rate
        next_at = time.monotonic()
        while not stop.is_set() and sessions:
            publisher.publish(_event(sessions.pop()))
            sent[0] += 1
            next_at += interval
            stop.wait(max(0.0, next_at - time.monotonic()))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield sent
    finally:
        stop.set()
        thread.join(timeout=10)
        broker.close()


def _series(
    label: str,
    settings: Settings,
    runtime: Runtime,
    sessions: list[str],
    gap: float,
) -> dict[str, Any]:
    broker = build_broker(settings)
    publisher = Publisher(broker, runtime.database, settings.namespace)
    waiter = runtime.waiter()
    times: list[float] = []
    try:
        for session_id in sessions:
            plan_id = f"plan-{uuid.uuid4()}"
            event = _event(session_id, plan_id)
            began = time.perf_counter()
            publisher.publish(event)
            waited = waiter.wait_plan(plan_id, 10.0)
            elapsed = time.perf_counter() - began
            if waited.timed_out or waited.plan is None:
                raise BenchError(f"{label}: no plan for {plan_id} within 10 s")
            if [s.index for s in waited.plan.stages] != [0, 1]:
                raise BenchError(f"{label}: unexpected stages {waited.plan.stages}")
            times.append(elapsed * 1000)
            if not waiter.wait_completion(event["event_id"], 15.0).completed:
                raise BenchError(f"{label}: logout {event['event_id']} did not complete")
            time.sleep(gap)
    finally:
        waiter.close()
        broker.close()
    ordered = sorted(times)
    return {
        "series": label,
        "logouts": len(times),
        "p50_ms": percentile(ordered, 0.50),
        "p90_ms": percentile(ordered, 0.90),
        "p99_ms": percentile(ordered, 0.99),
        "max_ms": ordered[-1],
    }


def run(args: Any) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    namespace = f"lo_bench_plan_{uuid.uuid4().hex[:8]}"
    before_beats = heartbeats(REDIS_URL)
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lo-bench-")))
        url = stack.enter_context(postgres_database(ADMIN_URL))
        server = stack.enter_context(python_rp_server(1))
        stack.callback(clean_redis, REDIS_URL, namespace)
        stack.callback(forget_heartbeats, REDIS_URL, before_beats)
        base = bench_settings(
            tmp, url, broker_url=REDIS_URL, namespace=namespace, protocols=["oidc", "saml"]
        )
        total = args.logouts * 2 + args.before_logouts
        sessions = [f"s-{n}" for n in range(total)]
        background = [f"b-{n}" for n in range(int(args.load * args.logouts * 0.2) + 2000)]
        runtime = Runtime.start(base)
        try:
            runtime.registry.upsert_providers(_providers(server, _sp_certificate(tmp)))
            _seed(runtime, sessions, background)
        finally:
            runtime.close()
        series = (
            (True, "Redis wake-up (shipped), worker idle", args.logouts, 0.0, args.gap),
            (
                True,
                f"Redis wake-up, background load {args.load:g}/s",
                args.logouts,
                args.load,
                args.gap,
            ),
            (
                False,
                f"dramatiq's polling (redis_wakeup=false), idle {args.before_gap:g} s",
                args.before_logouts,
                0.0,
                args.before_gap,
            ),
        )
        for wakeup, label, count, load, gap in series:
            if count == 0:
                continue
            settings = base.with_overrides(redis_wakeup=wakeup)
            env = worker_env(
                broker_url=REDIS_URL,
                database_url=url,
                namespace=namespace,
                data_dir=str(tmp),
                protocols="oidc,saml",
                redis_wakeup="true" if wakeup else "false",
            )
            beats = heartbeats(REDIS_URL)
            command = [str(worker_cli()), *worker_command(1, 8)]
            with worker_process(command, env, tmp / f"worker-{len(results)}.log") as worker:
                wait_consuming(REDIS_URL, beats, 1, worker)
                time.sleep(1.5)  # idle: consumers back off fully
                mine = [sessions.pop() for _ in range(count)]
                runtime = Runtime.start(settings)
                try:
                    if load:
                        with _background(settings, runtime, background, load) as sent:
                            result = _series(label, settings, runtime, mine, gap)
                        result["background_events"] = sent[0]
                    else:
                        result = _series(label, settings, runtime, mine, gap)
                finally:
                    runtime.close()
                worker.check_alive()
            print(
                f"  {label}: p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms",
                file=sys.stderr,
            )
            results.append(result)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = new_parser("plan_latency", __doc__)
    parser.add_argument("--logouts", type=int, default=1000, help="per shipped series")
    parser.add_argument("--before-logouts", type=int, default=50, help="with polling")
    parser.add_argument(
        "--before-gap", type=float, default=1.5, help="idle seconds between polled logouts"
    )
    parser.add_argument("--load", type=float, default=50.0, help="background logouts per s")
    parser.add_argument("--gap", type=float, default=0.1, help="idle seconds between logouts")
    add_json_option(parser, DEFAULT_JSON)
    args = parser.parse_args(argv)
    exit_on_sigterm()
    configure_logging("WARNING")
    info = machine_info(
        {"postgresql": postgres_version(ADMIN_URL), "redis": redis_version(REDIS_URL)}
    )
    results = run(args)
    rows = [
        [
            r["series"],
            fmt(r["logouts"], 0),
            fmt(r["p50_ms"], 1),
            fmt(r["p90_ms"], 1),
            fmt(r["p99_ms"], 1),
            fmt(r["max_ms"], 1),
            "met" if r["p99_ms"] <= TARGET_P99_MS else "not met",
        ]
        for r in results
    ]
    versions = f"PostgreSQL {info['postgresql']}, Redis {info['redis']}"
    print(f"Machine: {machine_line(info, versions)}\n")
    print(f"Command: `{command_line('plan_latency', argv)}`\n")
    print(
        render_table(
            ["series", "logouts", "p50 (ms)", "p90 (ms)", "p99 (ms)", "max (ms)", "p99 ≤ 20 ms"],
            "lrrrrrl",
            rows,
        )
    )
    if args.json:
        document = {"machine": info, "command": command_line("plan_latency", argv)}
        write_json(args.json, {**document, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
