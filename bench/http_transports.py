"""HTTP client throughput for back-channel deliveries, and the signing floor, side by side.

Every request is a ``POST`` of a ~900-byte ``application/x-www-form-urlencoded`` body to a
local server that answers ``200`` at once (nginx ``return 200;`` when installed, else a Python
aiohttp server in a subprocess), 64 in flight, spread over 8 ports (8 "hosts", so
``HttpSender``'s per-host limit of 8 allows 64 in flight too):

* ``httpx.AsyncClient`` with its default transport (httpcore);
* ``httpx.AsyncClient`` over ``httpx_aiohttp.AiohttpTransport``;
* ``aiohttp.ClientSession`` directly;
* ``orchestrator.sender.HttpSender.send_all`` in batches of 64 from one thread (as a worker
  thread calls it), with its default transport and with ``AiohttpTransport`` injected, and
  from 8 threads at once in batches of 8;

then the floor a worker cannot beat: building one logout request (claims, PyJWT RS256 or ES256
signature, form encoding: ``OidcHandler.backchannel_request``) on one thread, and building plus
POSTing in a bare asyncio loop with the fastest client above.

Run ``python -m bench.http_transports --help``; see ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, ExitStack, asynccontextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from bench.common import (
    RESULTS,
    BenchError,
    add_json_option,
    bench_settings,
    busy_percent,
    command_line,
    exit_on_sigterm,
    fmt,
    group_cpu,
    machine_cpu,
    machine_info,
    new_parser,
    render_table,
    write_json,
)
from bench.common import machine_line as common_machine_line
from bench.rp_server import RpServer, light_rp_server
from orchestrator.egress import EgressPolicy
from orchestrator.handlers import build_handler
from orchestrator.sender import HttpSender
from orchestrator.settings import Settings
from protocols import (
    BackchannelRequest,
    BackchannelResponse,
    LogoutContext,
    ProviderInfo,
    ProviderSessionInfo,
)
from protocols.oidc import OidcHandler, generate_key, parse_provider_settings
from protocols.oidc.keys import Algorithm

__all__ = [
    "FORM",
    "RequestBuilder",
    "Row",
    "aiohttp_poster",
    "floor_sign_and_post",
    "main",
    "request_builder",
]

DEFAULT_JSON = RESULTS / "http_transports.json"

FORM = {"content-type": "application/x-www-form-urlencoded"}
#: A logout-token-like form body (an RS256 logout token is ~780 bytes once form-encoded).
BODY = b"logout_token=" + (b"eyJhbGciOiJSUzI1NiJ9." * 50)[: 900 - len(b"logout_token=")]
CONCURRENCY = 64
SITES = 8
WARMUP = 256
#: The fewest requests a timed run makes, however slow the client.
MIN_COUNT = 300
TIMEOUT = 10.0

#: ``post(url, body) -> status`` of one client.
Poster = Callable[[str, bytes], Awaitable[int]]
ClientFactory = Callable[[int], AbstractAsyncContextManager[Poster]]


# -- results ---------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the table (median of the repeats)."""

    scenario: str
    client: str
    requests: int
    seconds: float
    rate: float
    cpu_us: float | None = None
    server_cpu_us: float | None = None
    busy: float | None = None
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Sample:
    """One timed repeat."""

    count: int
    seconds: float
    cpu: float
    server_cpu: float | None
    busy: float | None

    @property
    def rate(self) -> float:
        return self.count / self.seconds


@dataclass(frozen=True)
class Budget:
    """How many requests a timed run makes: ``count``, or fewer for a slow client."""

    count: int
    repeats: int
    max_seconds: float

    def size(self, warm_count: int, warm_seconds: float) -> int:
        """``count``, capped so that one run takes about ``max_seconds`` at the warm-up rate."""
        affordable = int(warm_count / max(warm_seconds, 1e-9) * self.max_seconds)
        return min(self.count, max(MIN_COUNT, affordable))


def markdown_table(rows: Sequence[Row]) -> str:
    """The results as a Markdown table."""
    columns = (
        "scenario",
        "client",
        "requests",
        "time (s)",
        "per second",
        "client CPU µs/req",
        "server CPU µs/req",
        "machine busy",
        "notes",
    )
    return render_table(
        columns,
        "llrrrrrrl",
        (
            (
                row.scenario,
                row.client,
                f"{row.requests:,}",
                f"{row.seconds:.2f}",
                f"{row.rate:,.0f}",
                fmt(row.cpu_us, 0),
                fmt(row.server_cpu_us, 0),
                "-" if row.busy is None else f"{row.busy:.0f}%",
                row.notes,
            )
            for row in rows
        ),
    )


def summarize(
    scenario: str, client: str, samples: Sequence[Sample], notes: str = "", **extra: Any
) -> Row:
    """The repeat with the median rate, with the spread of all repeats in the notes."""
    ordered = sorted(samples, key=lambda s: s.rate)
    median = ordered[(len(ordered) - 1) // 2]  # the lower median when even
    spread = ""
    if len(ordered) > 1:
        spread = (
            f"median of {len(ordered)} runs ({ordered[0].rate:,.0f} to {ordered[-1].rate:,.0f}/s)"
        )
    text = "; ".join(part for part in (notes, spread) if part)
    return Row(
        scenario=scenario,
        client=client,
        requests=median.count,
        seconds=median.seconds,
        rate=median.rate,
        cpu_us=median.cpu * 1e6 / median.count,
        server_cpu_us=(
            None if median.server_cpu is None else median.server_cpu * 1e6 / median.count
        ),
        busy=median.busy,
        notes=text,
        extra={
            **extra,
            "rates": [round(s.rate, 1) for s in samples],
            "cpu_us": [round(s.cpu * 1e6 / s.count, 1) for s in samples],
        },
    )


class Meter:
    """Wall time, this process's CPU, the server's CPU and the machine's busy share."""

    def __init__(self, server: RpServer | None) -> None:
        self._server = server

    def _server_cpu(self) -> float | None:
        return None if self._server is None else group_cpu(self._server.process.pid)

    def __enter__(self) -> Meter:
        self._busy = machine_cpu()
        self._server0 = self._server_cpu()
        self._cpu = time.process_time()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *_: object) -> None:
        self.seconds = time.perf_counter() - self._start
        self.cpu = time.process_time() - self._cpu
        after = self._server_cpu()
        self.server_cpu = None if after is None or self._server0 is None else after - self._server0
        self.busy = busy_percent(self._busy, machine_cpu())

    def sample(self, count: int) -> Sample:
        return Sample(count, self.seconds, self.cpu, self.server_cpu, self.busy)


# -- clients ---------------------------------------------------------------------------


@asynccontextmanager
async def httpx_poster(concurrency: int) -> AsyncIterator[Poster]:
    """``httpx.AsyncClient``, default transport (httpcore), pool sized to ``concurrency``."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        limits=limits, timeout=TIMEOUT, trust_env=False, follow_redirects=False
    ) as client:

        async def post(url: str, body: bytes) -> int:
            response = await client.post(url, content=body, headers=FORM)
            return response.status_code

        yield post


def aiohttp_session(concurrency: int) -> aiohttp.ClientSession:
    """An aiohttp session as the sender would want it: no cookies kept, ``limit`` in flight.

    Must be called inside the event loop that will use it.
    """
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency, limit_per_host=0),
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=TIMEOUT),
    )


@asynccontextmanager
async def httpx_aiohttp_poster(concurrency: int) -> AsyncIterator[Poster]:
    """``httpx.AsyncClient`` over ``httpx_aiohttp.AiohttpTransport``."""
    transport = AiohttpTransport(client=aiohttp_session(concurrency))
    async with httpx.AsyncClient(
        transport=transport, timeout=TIMEOUT, trust_env=False, follow_redirects=False
    ) as client:

        async def post(url: str, body: bytes) -> int:
            response = await client.post(url, content=body, headers=FORM)
            return response.status_code

        yield post


@asynccontextmanager
async def aiohttp_poster(concurrency: int) -> AsyncIterator[Poster]:
    """``aiohttp.ClientSession`` directly."""
    async with aiohttp_session(concurrency) as session:

        async def post(url: str, body: bytes) -> int:
            async with session.post(
                url, data=body, headers=FORM, allow_redirects=False
            ) as response:
                await response.read()
                return response.status

        yield post


CLIENTS: dict[str, tuple[str, ClientFactory]] = {
    "httpx": ("`httpx.AsyncClient` (default transport: httpcore)", httpx_poster),
    "httpx+aiohttp": (
        "`httpx.AsyncClient` + `httpx_aiohttp.AiohttpTransport`",
        httpx_aiohttp_poster,
    ),
    "aiohttp": ("`aiohttp.ClientSession` directly", aiohttp_poster),
}


async def _pool(count: int, concurrency: int, one: Callable[[int], Awaitable[None]]) -> None:
    """Run ``one(0..count-1)`` with ``concurrency`` of them in flight at any time."""
    indexes = iter(range(count))

    async def lane() -> None:
        for index in indexes:
            await one(index)

    await asyncio.gather(*(lane() for _ in range(concurrency)))


async def _client_samples(
    factory: ClientFactory,
    server: RpServer,
    budget: Budget,
    concurrency: int,
    build: Callable[[int], tuple[str, bytes]] | None = None,
) -> list[Sample]:
    """Warm up, then ``budget.repeats`` timed runs with ``concurrency`` POSTs in flight."""
    failures: list[int] = []

    async with factory(concurrency) as post:

        async def one(index: int) -> None:
            url, body = build(index) if build is not None else (server.url(index), BODY)
            status = await post(url, body)
            if status != 200:
                failures.append(status)

        began = time.perf_counter()
        await _pool(WARMUP, concurrency, one)
        count = budget.size(WARMUP, time.perf_counter() - began)
        samples = []
        for _ in range(budget.repeats):
            with Meter(server) as meter:
                await _pool(count, concurrency, one)
            samples.append(meter.sample(count))
    if failures:
        raise BenchError(f"{len(failures)} requests failed, e.g. HTTP {failures[0]}")
    return samples


def measure_client(name: str, server: RpServer, budget: Budget, concurrency: int) -> Row:
    label, factory = CLIENTS[name]
    samples = asyncio.run(_client_samples(factory, server, budget, concurrency))
    return summarize(
        f"{concurrency} in flight, bare asyncio loop",
        label,
        samples,
        client_key=name,
    )


# -- HttpSender ------------------------------------------------------------------------


def _sender(transport: str) -> HttpSender:
    """An ``HttpSender`` configured as ``Runtime.sender()`` does with default settings."""
    defaults = Settings.model_fields
    kwargs: dict[str, Any] = {
        "timeout": defaults["delivery_timeout"].default,
        "body_limit": defaults["response_body_limit"].default,
        "max_concurrency": defaults["max_concurrent_deliveries"].default,
        "per_host": defaults["max_concurrent_per_host"].default,
        "egress": EgressPolicy.from_entries(["127.0.0.1"]),  # the benchmark's RP
    }
    if transport == "httpx-aiohttp":
        limit = kwargs["max_concurrency"]
        # A factory: the session is made inside the sender's loop on the first request.
        kwargs["transport"] = AiohttpTransport(client=lambda: aiohttp_session(limit))
    return HttpSender(**kwargs)


def _check(results: Sequence[object]) -> None:
    for result in results:
        if not isinstance(result, BackchannelResponse) or result.status_code != 200:
            raise BenchError(f"HttpSender: a request failed: {result!r}")


def measure_sender(
    server: RpServer, budget: Budget, *, transport: str, threads: int, batch: int
) -> Row:
    """``send_all`` in batches of ``batch`` from ``threads`` threads at once."""
    sender = _sender(transport)
    try:
        requests = [
            BackchannelRequest(url=server.url(index), content=BODY, headers=FORM)
            for index in range(budget.count)
        ]

        def run(part: Sequence[BackchannelRequest]) -> None:
            for start in range(0, len(part), batch):
                _check(sender.send_all(part[start : start + batch]))

        def run_threads(all_requests: Sequence[BackchannelRequest]) -> None:
            if threads == 1:
                run(all_requests)
                return
            errors: list[BaseException] = []

            def guarded(part: Sequence[BackchannelRequest]) -> None:
                try:
                    run(part)
                except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
                    errors.append(exc)

            pool = [
                threading.Thread(target=guarded, args=(all_requests[index::threads],))
                for index in range(threads)
            ]
            for thread in pool:
                thread.start()
            for thread in pool:
                thread.join()
            if errors:
                raise errors[0]

        began = time.perf_counter()
        run_threads(requests[:WARMUP])
        count = budget.size(WARMUP, time.perf_counter() - began)
        samples = []
        for _ in range(budget.repeats):
            with Meter(server) as meter:
                run_threads(requests[:count])
            samples.append(meter.sample(count))
    finally:
        sender.close()
    label = "`HttpSender` as shipped (aiohttp directly)"
    if transport == "httpx-aiohttp":
        label = "`HttpSender` + httpx over `AiohttpTransport` (`transport=`; the previous sender)"
    who = "1 thread" if threads == 1 else f"{threads} threads at once"
    return summarize(
        f"`send_all`, batches of {batch}, {who}",
        label,
        samples,
        "limits 256 global / 8 per host (the defaults); CPU includes the calling thread(s)",
        transport=transport,
        threads=threads,
        batch=batch,
    )


# -- the floor: building (signing) requests -----------------------------------------------

RequestBuilder = Callable[[int], BackchannelRequest]


def request_builder(alg: Algorithm, key_dir: Path, sites: Callable[[int], str]) -> RequestBuilder:
    """``OidcHandler.backchannel_request`` for a fresh key of ``alg``: claims, sign, encode.

    ``sites(index)`` gives the back-channel URL of request ``index``.
    """
    key = generate_key(key_dir / alg.lower(), alg)
    settings = bench_settings(
        key_dir,
        f"sqlite:///{key_dir / 'unused.db'}",
        protocols=["oidc"],
        protocol_settings={"oidc": {"key_files": [key.source]}},
    )
    handler = build_handler(settings, OidcHandler)
    providers = [
        ProviderInfo(
            name=f"rp-{index}",
            protocol="oidc",
            enabled=True,
            full_logout_on_rp_initiated=False,
            settings=parse_provider_settings(
                f"rp-{index}",
                {
                    "client_id": f"rp-{index}",
                    "backchannel_logout_uri": sites(index),
                    "allow_http": True,
                },
            ),
        )
        for index in range(SITES)
    ]
    session = ProviderSessionInfo(
        id=1,
        session_id="idp-session-0000001",
        user_id="user-0000001",
        provider="rp-0",
        identifiers={"sid": "sid-7f3c9a1e-0000001", "sub": "user-0000001"},
    )

    def build(index: int) -> BackchannelRequest:
        context = LogoutContext(
            event_id="7d7b2c1e-52f6-4c8e-9a55-2b0c7c0f4a11",
            event_type="logout.user",
            initiator="user",
            delivery_id=f"d-{index}",
            attempt=1,
            now=datetime.now(UTC),
        )
        return handler.backchannel_request(providers[index % SITES], session, context)

    return build


def measure_signing(alg: Algorithm, build: RequestBuilder, seconds: float, repeats: int) -> Row:
    """Requests built per second on one thread, for ``seconds`` per repeat."""
    size = len(build(0).content)
    for index in range(20):  # warm-up
        build(index)
    samples = []
    for _ in range(repeats):
        done = 0
        with Meter(None) as meter:
            deadline = time.perf_counter() + seconds
            while time.perf_counter() < deadline:
                build(done)
                done += 1
        samples.append(meter.sample(done))
    return summarize(
        f"floor: build logout request, {alg}",
        "PyJWT via `OidcHandler.backchannel_request`, 1 thread",
        samples,
        f"claims + sign + form-encode, no I/O; body {size} bytes",
        alg=alg,
        body_bytes=size,
    )


def floor_sign_and_post(
    client: str,
    build: RequestBuilder,
    server: RpServer,
    budget: Budget,
    concurrency: int = CONCURRENCY,
) -> list[Sample]:
    """Build (sign) and POST requests in one bare asyncio loop (one core)."""
    _label, factory = CLIENTS[client]

    def make(index: int) -> tuple[str, bytes]:
        request = build(index)
        return request.url, request.content

    return asyncio.run(_client_samples(factory, server, budget, concurrency, make))


def _sign_and_post_row(
    alg: Algorithm,
    client: str,
    build: RequestBuilder,
    server: RpServer,
    budget: Budget,
) -> Row:
    return summarize(
        f"floor: build {alg} request + POST, {CONCURRENCY} in flight, bare asyncio loop",
        CLIENTS[client][0] + " (fastest above)",
        floor_sign_and_post(client, build, server, budget),
        "one thread: signing blocks the loop",
        alg=alg,
        client_key=client,
    )


# -- machine ---------------------------------------------------------------------------


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "n/a"


def machine(server: RpServer) -> dict[str, Any]:
    """What the numbers were measured on."""
    from cryptography.hazmat.backends.openssl import backend

    return machine_info(
        {
            "packages": {
                name: _version(name)
                for name in (
                    "httpx",
                    "httpcore",
                    "aiohttp",
                    "httpx-aiohttp",
                    "PyJWT",
                    "cryptography",
                )
            },
            "openssl_cryptography": backend.openssl_version_text(),
            "openssl_python": ssl.OPENSSL_VERSION,
            "server": server.description,
            "server_notes": server.notes,
        }
    )


def machine_line(info: dict[str, Any]) -> str:
    packages = ", ".join(f"{k} {v}" for k, v in info["packages"].items())
    versions = f"{packages}, {info['openssl_cryptography']} (cryptography)"
    return f"{common_machine_line(info, versions)}; server: {info['server']}"


# -- main ------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = new_parser("http_transports", __doc__)
    parser.add_argument(
        "--requests", type=int, default=5000, help="requests per timed run (default 5000)"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed runs per row; the median is shown (3)"
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=5.0,
        help="cap one timed run at about this long for slow clients: fewer requests, "
        f"at least {MIN_COUNT} (default 5 s)",
    )
    parser.add_argument(
        "--sign-seconds",
        type=float,
        default=2.0,
        help="length of one signing-only run (default 2 s)",
    )
    parser.add_argument(
        "--no-nginx", action="store_true", help="use the Python server even if nginx is there"
    )
    add_json_option(parser, DEFAULT_JSON)
    args = parser.parse_args(argv)
    if args.requests < 100 or args.repeats < 1:
        parser.error("use at least 100 requests and 1 repeat")
    return args


def run(args: argparse.Namespace, server: RpServer, key_dir: Path) -> list[Row]:
    rows: list[Row] = []
    budget = Budget(args.requests, args.repeats, args.max_seconds)

    def step(name: str, action: Callable[[], Row]) -> Row:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        began = time.perf_counter()
        row = action()
        print(
            f"  {row.rate:,.0f}/s, done in {time.perf_counter() - began:.1f}s",
            file=sys.stderr,
            flush=True,
        )
        rows.append(row)
        return row

    clients = [
        step(name, partial(measure_client, name, server, budget, CONCURRENCY)) for name in CLIENTS
    ]
    step("httpx, 8 in flight", partial(measure_client, "httpx", server, budget, 8))
    shapes = (
        ("product", 1, 64),
        ("httpx-aiohttp", 1, 64),
        ("product", 8, 8),
        ("httpx-aiohttp", 8, 8),
    )
    for transport, threads, batch in shapes:
        step(
            f"HttpSender {transport} {threads}x{batch}",
            partial(
                measure_sender,
                server,
                budget,
                transport=transport,
                threads=threads,
                batch=batch,
            ),
        )
    fastest = str(max(clients, key=lambda row: row.rate).extra["client_key"])
    algorithms: tuple[Algorithm, ...] = ("RS256", "ES256")
    for alg in algorithms:
        build = request_builder(alg, key_dir, server.url)
        step(f"sign {alg}", partial(measure_signing, alg, build, args.sign_seconds, budget.repeats))
        step(f"sign {alg} + POST", partial(_sign_and_post_row, alg, fastest, build, server, budget))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()  # clean up on SIGTERM too
    command = command_line("http_transports", argv)
    with ExitStack() as cleanup:
        key_dir = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="lo-bench-")))
        server = cleanup.enter_context(light_rp_server(SITES, use_nginx=not args.no_nginx))
        for note in server.notes:
            print(f"NOTE: {note}", file=sys.stderr)
        info = machine(server)
        print(f"machine: {machine_line(info)}", file=sys.stderr)
        rows = run(args, server, key_dir)
    print(f"Machine: {machine_line(info)}\n")
    for note in info["server_notes"]:
        print(f"**Note: {note}.**\n")
    print(f"Command: `{command}`\n")
    print(markdown_table(rows))
    if args.json:
        write_json(
            args.json,
            {"machine": info, "command": command, "results": [asdict(row) for row in rows]},
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
