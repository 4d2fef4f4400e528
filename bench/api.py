"""The HTTP service: events accepted per second through ``POST /v1/events`` and binding-check
latency over HTTP, each side by side with the Python API in the same run.

A real ``logout-orchestrator serve`` (uvicorn, ``--api-workers`` processes) runs on a fresh
PostgreSQL database and Redis; no worker consumes, so what is measured is the durable intake
(validation, the outbox row, the enqueue) and the answer. Series:

* ``POST /v1/events``, batches of 1 (one client; then ``--clients`` clients at once) and of 100,
  each answered 202 only once its events are in the outbox and on Redis;
* the Python API on the same database and broker: ``Publisher.publish`` per event and
  ``Publisher.publish_many`` of 100;
* ``POST /v1/sessions/{id}/binding-check`` whose binding holds (a GeoIP country binding,
  GeoIP databases written by ``tests/geoip_data.py``), one client, p50/p99 of the client's
  wall time; and ``BindingChecker.check`` in-process on the same session.

Targets (2 cores): ingestion at least 1,000 events/s with batches; binding check p99 at most
5 ms over HTTP.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO, Any

import httpx

from bench.common import (
    POSTGRES_URL,
    REDIS_URL,
    REPO,
    BenchError,
    add_json_option,
    bench_settings,
    clean_redis,
    command_line,
    exit_on_sigterm,
    fmt,
    logout_event,
    machine_info,
    machine_line,
    new_parser,
    percentile,
    postgres_database,
    postgres_version,
    redis_version,
    render_table,
    worker_cli,
    worker_env,
    write_json,
)
from orchestrator import Publisher, Runtime
from orchestrator.api_tokens import hash_token, new_token
from orchestrator.binding_check import BindingChecker
from orchestrator.settings import Settings
from tests.geoip_data import write_geoip_databases
from workers import build_broker

SESSION = "s-bench"
LOGIN_IP = "81.2.69.142"  # London
SAME_COUNTRY_IP = "81.2.69.160"  # London too: the binding holds


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def _service(env: dict[str, str], port: int) -> Iterator[str]:
    """``serve`` running until the block ends; yields its base URL."""
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [str(worker_cli()), "serve"], env=env, stdout=log, stderr=log, start_new_session=True
        )
        try:
            yield _ready(process, log, f"http://127.0.0.1:{port}")
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def _ready(process: subprocess.Popen[bytes], log: IO[bytes], base: str) -> str:
    """``base`` once ``/readyz`` answers 200; BenchError with the log if serve exits."""
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            log.seek(0)
            raise BenchError(f"serve exited: {log.read().decode(errors='replace')[-2000:]}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return base
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise BenchError("serve not ready within 60 s")
        time.sleep(0.1)


def _post_events(base: str, token: str, batches: list[list[dict[str, Any]]]) -> None:
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as client:
        for batch in batches:
            body = batch[0] if len(batch) == 1 else batch
            answer = client.post("/v1/events", json=body, timeout=30)
            if answer.status_code != 202:
                raise BenchError(f"POST /v1/events: {answer.status_code} {answer.text[:300]}")


def _events_series(
    name: str, base: str, token: str, events: int, batch: int, clients: int
) -> dict[str, Any]:
    all_events = [logout_event(f"s-{uuid.uuid4().hex[:8]}") for _ in range(events)]
    batches = [all_events[i : i + batch] for i in range(0, events, batch)]
    shares = [batches[i::clients] for i in range(clients)]
    threads = [threading.Thread(target=_post_events, args=(base, token, s)) for s in shares]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    return {"series": name, "events": events, "seconds": seconds, "per_s": events / seconds}


def _python_series(name: str, publisher: Publisher, events: int, batch: int) -> dict[str, Any]:
    items = [logout_event(f"s-{uuid.uuid4().hex[:8]}") for _ in range(events)]
    started = time.perf_counter()
    for start in range(0, events, batch):
        chunk = items[start : start + batch]
        if batch == 1:
            publisher.publish(chunk[0])
        else:
            publisher.publish_many(chunk)
    seconds = time.perf_counter() - started
    return {"series": name, "events": events, "seconds": seconds, "per_s": events / seconds}


def _latencies(name: str, timings: Sequence[float]) -> dict[str, Any]:
    ordered = sorted(timings)
    return {
        "series": name,
        "checks": len(ordered),
        "p50_ms": percentile(ordered, 0.5) * 1000,
        "p99_ms": percentile(ordered, 0.99) * 1000,
        "max_ms": ordered[-1] * 1000,
    }


def _http_checks(base: str, token: str, count: int) -> list[float]:
    timings = []
    body = {"ip": SAME_COUNTRY_IP, "path": "/account", "method": "GET"}
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as client:
        for number in range(count + 50):
            started = time.perf_counter()
            answer = client.post(f"/v1/sessions/{SESSION}/binding-check", json=body)
            took = time.perf_counter() - started
            if answer.status_code != 200 or answer.json()["ok"] is not True:
                raise BenchError(f"binding check: {answer.status_code} {answer.text[:300]}")
            if number >= 50:  # the first 50 warm up
                timings.append(took)
    return timings


def _python_checks(checker: BindingChecker, count: int) -> list[float]:
    timings = []
    for number in range(count + 50):
        started = time.perf_counter()
        result = checker.check(SESSION, SAME_COUNTRY_IP, publish=False)
        took = time.perf_counter() - started
        if not result.ok:
            raise BenchError("the binding broke in-process")
        if number >= 50:
            timings.append(took)
    return timings


def run(args: Any) -> dict[str, list[dict[str, Any]]]:
    namespace = f"bench{uuid.uuid4().hex[:8]}"
    token = new_token()
    with ExitStack() as stack:
        database_url = stack.enter_context(postgres_database(args.postgres))
        stack.callback(clean_redis, args.redis, namespace)
        work = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        geoip = write_geoip_databases(work / "geoip")
        values: dict[str, Any] = {
            "broker_url": args.redis,
            "namespace": namespace,
            "geoip_city_db": geoip.city,
            "geoip_asn_db": geoip.asn,
        }
        settings: Settings = bench_settings(work / "data", database_url, **values)
        runtime = Runtime.start(settings, handlers={})
        stack.callback(runtime.close)
        started = {
            "type": "session.started",
            "event_id": str(uuid.uuid4()),
            "occurred_at": "2026-11-29T10:00:00+00:00",
            "initiator": "user",
            "session_id": SESSION,
            "user_id": "alice",
            "ip": LOGIN_IP,
            "geoip_binding": "bind_continent_country",
        }
        from schemas import SessionStarted

        runtime.activity().started(SessionStarted.model_validate(started))
        broker = build_broker(settings)
        stack.callback(broker.close)
        publisher = Publisher(broker, runtime.database, namespace)
        checker = BindingChecker(
            runtime.database, runtime.geoip(), settings.binding_unlisted_addresses
        )

        port = _free_port()
        tokens = [
            {
                "name": "bench",
                "sha256": hash_token(token),
                "scopes": ["events:write", "sessions:write"],
            }
        ]
        env = worker_env(
            database_url=database_url,
            broker_url=args.redis,
            namespace=namespace,
            data_dir=str(work / "data"),
            protocols="[]",
            geoip_city_db=str(geoip.city),
            geoip_asn_db=str(geoip.asn),
            api_host="127.0.0.1",
            api_port=str(port),
            api_workers=str(args.api_workers),
            api_tokens=json.dumps(tokens),
        )
        base = stack.enter_context(_service(env, port))
        _events_series("warm-up", base, token, 50, 1, 1)
        _python_series("warm-up", publisher, 50, 1)
        intake = [
            _events_series("HTTP, batches of 1, 1 client", base, token, args.single, 1, 1),
            _events_series(
                f"HTTP, batches of 1, {args.clients} clients",
                base,
                token,
                args.single,
                1,
                args.clients,
            ),
            _events_series("HTTP, batches of 100, 1 client", base, token, args.batched, 100, 1),
            _python_series("Python publish(), 1 per call", publisher, args.single, 1),
            _python_series("Python publish_many(), 100 per call", publisher, args.batched, 100),
        ]
        checks = [
            _latencies("HTTP POST .../binding-check", _http_checks(base, token, args.checks)),
            _latencies("Python BindingChecker.check", _python_checks(checker, args.checks)),
        ]
    return {"intake": intake, "binding_check": checks}


def main(argv: Sequence[str] | None = None) -> int:
    parser = new_parser("api", __doc__)
    parser.add_argument("--single", type=int, default=500, help="events posted one by one")
    parser.add_argument("--batched", type=int, default=5000, help="events posted 100 at a time")
    parser.add_argument("--clients", type=int, default=4, help="clients posting at once")
    parser.add_argument("--checks", type=int, default=1000, help="binding checks per series")
    parser.add_argument("--api-workers", type=int, default=1, help="serve processes")
    parser.add_argument("--postgres", default=POSTGRES_URL, help="admin URL (creates a DB)")
    parser.add_argument("--redis", default=REDIS_URL)
    add_json_option(parser, REPO / "bench" / "results" / "api.json")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    versions = {"postgres": postgres_version(args.postgres), "redis": redis_version(args.redis)}
    info = machine_info(versions)
    results = run(args)
    said = f"PostgreSQL {versions['postgres']}, Redis {versions['redis']}"
    print(f"Machine: {machine_line(info, said)}\n")
    print(f"Command: `{command_line('api', argv)}`\n")
    print(
        render_table(
            ["intake", "events", "s", "events/s"],
            "lrrr",
            [
                [r["series"], str(r["events"]), fmt(r["seconds"]), fmt(r["per_s"], 0)]
                for r in results["intake"]
            ],
        )
    )
    print()
    print(
        render_table(
            ["binding check", "n", "p50 ms", "p99 ms", "max ms"],
            "lrrrr",
            [
                [
                    r["series"],
                    str(r["checks"]),
                    fmt(r["p50_ms"]),
                    fmt(r["p99_ms"]),
                    fmt(r["max_ms"]),
                ]
                for r in results["binding_check"]
            ],
        )
    )
    if args.json:
        document = {"machine": info, "command": command_line("api", argv), "results": results}
        write_json(args.json, document)
    return 0


if __name__ == "__main__":
    sys.exit(main())
