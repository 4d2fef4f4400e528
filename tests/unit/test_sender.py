"""Unit tests of ``HttpSender``: order, redirects, body cap, errors, limits, a real loopback."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import Future
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import httpx
import pytest

from orchestrator.egress import EgressPolicy
from orchestrator.errors import PermanentDeliveryError, TransientDeliveryError
from orchestrator.sender import Built, HttpSender, Sent
from protocols import BackchannelRequest, BackchannelResponse

MakeSender = Callable[..., HttpSender]
#: The loopback servers of these tests, admitted through the egress policy.
LOOPBACK = EgressPolicy.from_entries(["127.0.0.1"])

#: How long a concurrency gate waits before admitting defeat. Only reached when a test fails.
GATE_TIMEOUT = 2.0


def _reply(
    status: int = 200, body: bytes = b"", headers: dict[str, str] | None = None
) -> httpx.Response:
    """A response whose body is still to be streamed, as a real transport gives it."""
    return httpx.Response(status, headers=headers, stream=httpx.ByteStream(body))


def _post(url: str, content: bytes = b"x=1") -> BackchannelRequest:
    return BackchannelRequest(
        url=url, content=content, headers={"content-type": "application/x-www-form-urlencoded"}
    )


@pytest.fixture
def make_sender() -> Iterator[MakeSender]:
    """Build senders (admitting 127.0.0.1 unless told) that are all closed at teardown."""
    made: list[HttpSender] = []

    def make(**kwargs: Any) -> HttpSender:
        kwargs.setdefault("egress", LOOPBACK)
        sender = HttpSender(**kwargs)
        made.append(sender)
        return sender

    yield make
    for sender in made:
        sender.close()


# -- basic exchange ----------------------------------------------------------------------


def test_empty_batch_sends_nothing(make_sender: MakeSender) -> None:
    """An empty batch gives an empty list without touching the transport."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return _reply()

    sender = make_sender(transport=httpx.MockTransport(handler))
    assert sender.send_all([]) == []
    assert seen == []


def test_request_is_sent_as_built(make_sender: MakeSender) -> None:
    """Method, URL, body and headers reach the transport unchanged; headers come back lower."""
    seen: list[tuple[str, str, bytes, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(
            (request.method, str(request.url), request.content, request.headers.get("content-type"))
        )
        return _reply(204, headers={"Retry-After": "5", "X-Thing": "A"})

    sender = make_sender(transport=httpx.MockTransport(handler))
    [result] = sender.send_all([_post("http://rp.test/logout", b"logout_token=abc")])
    assert seen == [
        ("POST", "http://rp.test/logout", b"logout_token=abc", "application/x-www-form-urlencoded")
    ]
    assert isinstance(result, BackchannelResponse)
    assert result.status_code == 204
    assert result.headers["retry-after"] == "5"
    assert result.headers["x-thing"] == "A"


def test_results_come_back_in_request_order(make_sender: MakeSender) -> None:
    """Results follow request order even when the first request is answered last."""
    last_answered = asyncio.Event()
    finished: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/0":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(last_answered.wait(), GATE_TIMEOUT)
        finished.append(path)
        if path == "/4":
            last_answered.set()
        return _reply(200 + int(path[1:]), body=path.encode())

    sender = make_sender(transport=httpx.MockTransport(handler))
    urls = [f"http://rp{i}.test/{i}" for i in range(5)]
    results = sender.send_all([_post(url) for url in urls])
    assert finished[-1] == "/0"
    assert [r.status_code for r in results if isinstance(r, BackchannelResponse)] == [
        200,
        201,
        202,
        203,
        204,
    ]
    assert [r.content for r in results if isinstance(r, BackchannelResponse)] == [
        b"/0",
        b"/1",
        b"/2",
        b"/3",
        b"/4",
    ]


def test_redirect_is_returned_not_followed(make_sender: MakeSender) -> None:
    """A 302 comes back as the response; the transport sees exactly one request."""
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return _reply(302, headers={"Location": "http://rp.test/elsewhere"})

    sender = make_sender(transport=httpx.MockTransport(handler))
    [result] = sender.send_all([_post("http://rp.test/logout")])
    assert isinstance(result, BackchannelResponse)
    assert result.status_code == 302
    assert result.headers["location"] == "http://rp.test/elsewhere"
    assert seen == ["http://rp.test/logout"]


def test_small_body_is_returned_whole(make_sender: MakeSender) -> None:
    """A body below the limit comes back intact."""
    sender = make_sender(
        body_limit=1024, transport=httpx.MockTransport(lambda _: _reply(400, b"bad sid"))
    )
    [result] = sender.send_all([_post("http://rp.test/logout")])
    assert isinstance(result, BackchannelResponse)
    assert result.content == b"bad sid"


def test_body_read_is_capped_at_body_limit(make_sender: MakeSender) -> None:
    """A huge body is cut at ``body_limit`` and the rest is never read from the stream."""

    class Chunks(httpx.AsyncByteStream):
        def __init__(self) -> None:
            self.yielded = 0

        async def __aiter__(self) -> AsyncIterator[bytes]:
            for _ in range(1000):
                self.yielded += 1
                yield b"a" * 300

    stream = Chunks()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=stream)

    sender = make_sender(body_limit=1024, transport=httpx.MockTransport(handler))
    [result] = sender.send_all([_post("http://rp.test/logout")])
    assert isinstance(result, BackchannelResponse)
    assert result.content == b"a" * 1024
    assert stream.yielded <= 5


def test_response_read_by_the_transport_is_returned(make_sender: MakeSender) -> None:
    """A transport may hand back an already-read response (``content=``); it still works."""
    sender = make_sender(
        transport=httpx.MockTransport(lambda _: httpx.Response(200, content=b"done"))
    )
    [result] = sender.send_all([_post("http://rp.test/logout")])
    assert isinstance(result, BackchannelResponse)
    assert result.status_code == 200
    assert result.content == b"done"


def test_no_cookies_carry_over_between_logouts(make_sender: MakeSender) -> None:
    """A cookie one logout's answer sets is never sent with a later logout (another user's)."""
    cookies: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        cookies.append(request.headers.get("cookie"))
        return _reply(200, headers={"Set-Cookie": "rp_session=user-a; Path=/"})

    sender = make_sender(transport=httpx.MockTransport(handler))
    sender.send_all([_post("http://rp.test/logout", b"sid=user-a")])
    sender.send_all([_post("http://rp.test/logout", b"sid=user-b")])
    assert cookies == [None, None]


# -- errors ------------------------------------------------------------------------------


def test_connect_error_is_transient(make_sender: MakeSender) -> None:
    """A refused connection gives a TransientDeliveryError, not an exception."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    sender = make_sender(transport=httpx.MockTransport(handler))
    [result] = sender.send_all([_post("http://rp.test/logout")])
    assert isinstance(result, TransientDeliveryError)
    assert "connection failed" in result.detail
    assert result.status_code is None


def test_read_timeout_is_transient(make_sender: MakeSender) -> None:
    """An httpx read timeout gives a TransientDeliveryError naming the timeout."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    sender = make_sender(timeout=3.0, transport=httpx.MockTransport(handler))
    [result] = sender.send_all([_post("http://rp.test/logout")])
    assert isinstance(result, TransientDeliveryError)
    assert "no answer within 3 s" in result.detail


def test_one_failure_does_not_spoil_the_batch(make_sender: MakeSender) -> None:
    """Failures are per request: the other requests of the batch still get their answers."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "down.test":
            raise httpx.ConnectError("refused", request=request)
        if request.url.host == "slow.test":
            raise httpx.ReadTimeout("timed out", request=request)
        return _reply(200)

    sender = make_sender(transport=httpx.MockTransport(handler))
    results = sender.send_all(
        [_post("http://ok.test/"), _post("http://down.test/"), _post("http://slow.test/")]
    )
    assert isinstance(results[0], BackchannelResponse)
    assert results[0].status_code == 200
    assert isinstance(results[1], TransientDeliveryError)
    assert isinstance(results[2], TransientDeliveryError)


@pytest.mark.parametrize("url", ["ftp://rp.test/logout", "file:///etc/passwd", "rp.test/logout"])
def test_unsupported_url_is_permanent(make_sender: MakeSender, url: str) -> None:
    """A URL without http(s) is refused before any connection, as a permanent failure."""
    sender = make_sender(timeout=2.0)  # the real transport: it refuses before connecting
    [result] = sender.send_all([_post(url)])
    assert isinstance(result, PermanentDeliveryError)
    assert "unusable URL" in result.detail


# -- concurrency -------------------------------------------------------------------------


class _Gauge:
    """Counts requests in flight; each request waits until ``target`` are in flight at once."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.in_flight = 0
        self.max_in_flight = 0
        self.hosts: Counter[str] = Counter()
        self.max_per_host: Counter[str] = Counter()
        self.requests = 0
        self.gave_up = False
        self.gate = asyncio.Event()

    async def handler(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        self.requests += 1
        self.in_flight += 1
        self.hosts[host] += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.max_per_host[host] = max(self.max_per_host[host], self.hosts[host])
        try:
            if self.in_flight >= self.target:
                self.gate.set()
            try:
                await asyncio.wait_for(self.gate.wait(), GATE_TIMEOUT)
            except TimeoutError:
                self.gave_up = True  # fewer in flight than expected: let everyone go
                self.gate.set()
            return _reply(200)
        finally:
            self.in_flight -= 1
            self.hosts[host] -= 1


@pytest.mark.parametrize("count", [1, 2, 3, 4, 9])
def test_one_host_runs_per_host_requests_at_once(make_sender: MakeSender, count: int) -> None:
    """For one host, exactly min(N, per_host) requests are in flight at the same time."""
    gauge = _Gauge(target=min(count, 3))
    sender = make_sender(
        max_concurrency=64, per_host=3, transport=httpx.MockTransport(gauge.handler)
    )
    results = sender.send_all([_post(f"http://rp.test/{i}") for i in range(count)])
    assert not gauge.gave_up, "fewer requests were in flight at once than the limits allow"
    assert gauge.requests == count
    assert all(isinstance(r, BackchannelResponse) for r in results)
    assert gauge.max_in_flight == min(count, 3)


def test_global_limit_holds_across_hosts(make_sender: MakeSender) -> None:
    """Across many hosts, no more than ``max_concurrency`` requests are ever in flight."""
    gauge = _Gauge(target=4)
    sender = make_sender(
        max_concurrency=4, per_host=8, transport=httpx.MockTransport(gauge.handler)
    )
    requests = [_post(f"http://rp{i % 6}.test/{i}") for i in range(12)]
    results = sender.send_all(requests)
    assert not gauge.gave_up, "fewer requests were in flight at once than the limits allow"
    assert gauge.requests == 12
    assert all(isinstance(r, BackchannelResponse) for r in results)
    assert gauge.max_in_flight == 4


def test_per_host_limit_is_per_host(make_sender: MakeSender) -> None:
    """Each host gets its own per-host allowance: 3 hosts x 2 run at once, 2 per host."""
    gauge = _Gauge(target=6)
    sender = make_sender(
        max_concurrency=64, per_host=2, transport=httpx.MockTransport(gauge.handler)
    )
    requests = [_post(f"http://rp{i % 3}.test/{i}") for i in range(12)]
    sender.send_all(requests)
    assert not gauge.gave_up, "fewer requests were in flight at once than the limits allow"
    assert gauge.requests == 12
    assert gauge.max_in_flight == 6
    assert dict(gauge.max_per_host) == {"rp0.test": 2, "rp1.test": 2, "rp2.test": 2}


def test_busy_host_does_not_starve_other_hosts(make_sender: MakeSender) -> None:
    """Global 2, per host 1, batch [A, A, B]: A1 and B are in flight together (no starving)."""
    gauge = _Gauge(target=2)
    sender = make_sender(
        max_concurrency=2, per_host=1, transport=httpx.MockTransport(gauge.handler)
    )
    sender.send_all([_post("http://a.test/1"), _post("http://a.test/2"), _post("http://b.test/1")])
    assert not gauge.gave_up, "fewer requests were in flight at once than the limits allow"
    assert gauge.requests == 3
    assert gauge.max_in_flight == 2
    assert gauge.max_per_host["a.test"] == 1


def test_batches_from_several_threads_share_the_limits(make_sender: MakeSender) -> None:
    """Concurrent send_all calls from two threads share one per-host limit and both finish."""
    gauge = _Gauge(target=2)
    sender = make_sender(
        max_concurrency=64, per_host=2, transport=httpx.MockTransport(gauge.handler)
    )
    results: dict[int, list[Any]] = {}

    def run(index: int) -> None:
        results[index] = sender.send_all([_post(f"http://rp.test/{index}/{i}") for i in range(3)])

    threads = [threading.Thread(target=run, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert sorted(results) == [0, 1]
    assert all(len(batch) == 3 for batch in results.values())
    assert not gauge.gave_up, "fewer requests were in flight at once than the limits allow"
    assert gauge.requests == 6
    assert gauge.max_per_host["rp.test"] == 2


# -- a real loopback server --------------------------------------------------------------


class _SlowHandler(BaseHTTPRequestHandler):
    """Sleeps 0.3 s per request; ``/slow`` waits until released (or 3 s)."""

    release: ClassVar[threading.Event]
    bodies: ClassVar[list[bytes]]

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        type(self).bodies.append(self.rfile.read(length))
        if self.path == "/slow":
            type(self).release.wait(3.0)
        else:
            time.sleep(0.3)
        with contextlib.suppress(OSError):
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet."""


@pytest.fixture
def loopback() -> Iterator[tuple[str, type[_SlowHandler]]]:
    """A threading HTTP server on 127.0.0.1 with an ephemeral port."""

    class Handler(_SlowHandler):
        release: ClassVar[threading.Event] = threading.Event()
        bodies: ClassVar[list[bytes]] = []

    handler = Handler
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(
        target=server.serve_forever, args=(0.05,), name="loopback", daemon=True
    )
    thread.start()
    host, port = server.server_address[:2]
    try:
        yield f"http://{host!s}:{port}", handler
    finally:
        handler.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_loopback_timeout_is_transient_and_close_works(
    loopback: tuple[str, type[_SlowHandler]],
) -> None:
    """Against a real server: 0.3 s answers arrive, a longer wait times out, close() stops."""
    base, handler = loopback
    before = set(threading.enumerate())
    sender = HttpSender(timeout=0.5, egress=LOOPBACK)
    started = [t for t in threading.enumerate() if t not in before and t.name == "logout-sender"]
    try:
        ok, slow = sender.send_all(
            [_post(f"{base}/ok", b"sid=one"), _post(f"{base}/slow", b"sid=two")]
        )
    finally:
        handler.release.set()
        sender.close()
    assert isinstance(ok, BackchannelResponse)
    assert ok.status_code == 200
    assert ok.content == b"ok"
    assert isinstance(slow, TransientDeliveryError)
    assert "no answer within 0.5 s" in slow.detail
    assert sorted(handler.bodies) == [b"sid=one", b"sid=two"]
    assert len(started) == 1
    assert not started[0].is_alive()
    sender.close()  # a second close is a no-op


def test_loopback_refused_connection_is_transient(make_sender: MakeSender) -> None:
    """A closed loopback port gives a TransientDeliveryError (connection failed)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlowHandler)
    port = server.server_address[1]
    server.server_close()  # the port is now closed: connecting is refused
    sender = make_sender(timeout=2.0)
    [result] = sender.send_all([_post(f"http://127.0.0.1:{port}/logout")])
    assert isinstance(result, TransientDeliveryError)
    assert "connection failed" in result.detail


# -- the default client (aiohttp) against a real loopback server ---------------------------


class _ScriptedHandler(BaseHTTPRequestHandler):
    """Answers by path: ``/redirect`` 302, ``/big`` 1 MiB, ``/cookie`` sets a cookie."""

    seen: ClassVar[list[tuple[str, dict[str, str], bytes]]]

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        type(self).seen.append(
            (self.path, {k.lower(): v for k, v in self.headers.items()}, self.rfile.read(length))
        )
        body = b"ok"
        self.send_response(302 if self.path == "/redirect" else 200)
        if self.path == "/redirect":
            self.send_header("location", "/elsewhere")
        elif self.path == "/big":
            body = b"a" * (1 << 20)
        elif self.path == "/cookie":
            self.send_header("set-cookie", "rp_session=user-a; Path=/")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(OSError):
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet."""


@pytest.fixture
def scripted() -> Iterator[tuple[str, type[_ScriptedHandler]]]:
    """A threading HTTP server on 127.0.0.1 answering by path."""

    class Handler(_ScriptedHandler):
        seen: ClassVar[list[tuple[str, dict[str, str], bytes]]] = []

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    try:
        yield f"http://{host!s}:{port}", Handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_default_client_sends_the_request_as_built(
    make_sender: MakeSender, scripted: tuple[str, type[_ScriptedHandler]]
) -> None:
    """aiohttp sends the body and headers unchanged and returns lower-cased headers."""
    base, handler = scripted
    [result] = make_sender().send_all([_post(f"{base}/logout", b"logout_token=abc")])
    assert isinstance(result, BackchannelResponse)
    assert (result.status_code, result.content) == (200, b"ok")
    assert result.headers["content-length"] == "2"
    [(path, headers, body)] = handler.seen
    assert (path, body) == ("/logout", b"logout_token=abc")
    assert headers["content-type"] == "application/x-www-form-urlencoded"


def test_default_client_returns_redirects_unfollowed(
    make_sender: MakeSender, scripted: tuple[str, type[_ScriptedHandler]]
) -> None:
    """A 302 from a real server comes back as it is; the target is never requested."""
    base, handler = scripted
    [result] = make_sender().send_all([_post(f"{base}/redirect")])
    assert isinstance(result, BackchannelResponse)
    assert result.status_code == 302
    assert result.headers["location"] == "/elsewhere"
    assert [path for path, _, _ in handler.seen] == ["/redirect"]


def test_default_client_caps_the_body(
    make_sender: MakeSender, scripted: tuple[str, type[_ScriptedHandler]]
) -> None:
    """Of a 1 MiB answer only ``body_limit`` bytes are kept."""
    base, _ = scripted
    [result] = make_sender(body_limit=4096).send_all([_post(f"{base}/big")])
    assert isinstance(result, BackchannelResponse)
    assert result.content == b"a" * 4096


def test_default_client_keeps_no_cookies(
    make_sender: MakeSender, scripted: tuple[str, type[_ScriptedHandler]]
) -> None:
    """A cookie set by one logout's answer is never sent with the next one."""
    base, handler = scripted
    sender = make_sender()
    sender.send_all([_post(f"{base}/cookie")])
    sender.send_all([_post(f"{base}/cookie")])
    assert [headers.get("cookie") for _, headers, _ in handler.seen] == [None, None]


def test_send_as_built_sends_each_group_when_it_is_ready(
    make_sender: MakeSender, scripted: tuple[str, type[_ScriptedHandler]]
) -> None:
    """A finished group goes out before a slower one is done; a failed build is returned
    in its place; the items come back in the order of the builds, group after group."""
    base, handler = scripted
    ready: Future[Sequence[Built]] = Future()
    later: Future[Sequence[Built]] = Future()
    ready.set_result([_post(f"{base}/first"), PermanentDeliveryError("no sid")])
    outcome: list[list[Sent]] = []
    thread = threading.Thread(
        target=lambda: outcome.append(make_sender().send_as_built([ready, later]))
    )
    thread.start()
    deadline = time.monotonic() + GATE_TIMEOUT
    while not handler.seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [path for path, _, _ in handler.seen] == ["/first"], "the ready group waited"
    later.set_result([_post(f"{base}/second"), _post(f"{base}/third")])
    thread.join(timeout=5)
    [(first, failed, second, third)] = outcome
    assert isinstance(first, tuple)
    assert isinstance(first[1], BackchannelResponse)
    assert isinstance(failed, PermanentDeliveryError)
    assert isinstance(second, tuple)
    assert second[0].url == f"{base}/second"
    assert isinstance(third, tuple)
    assert third[0].url == f"{base}/third"
    assert sorted(path for path, _, _ in handler.seen) == ["/first", "/second", "/third"]


def test_a_group_that_failed_to_build_fails_the_call(make_sender: MakeSender) -> None:
    """A group whose task raised (builds catch what handlers raise, so only a bug of ours
    gets here) is raised to the caller, as is a time_left list that does not fit the
    groups."""
    broken: Future[Sequence[Built]] = Future()
    broken.set_exception(RuntimeError("boom"))
    sender = make_sender()
    with pytest.raises(RuntimeError, match="boom"):
        sender.send_as_built([broken])
    fine: Future[Sequence[Built]] = Future()
    fine.set_result([])
    with pytest.raises(ValueError, match="2 time_left sequences for 1 groups"):
        sender.send_as_built([fine], [[], []])


def test_a_request_without_lease_enough_is_not_sent() -> None:
    """A request whose attempt has no more lease left than the timeout is not started."""
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return _reply(200)

    sender = HttpSender(timeout=1.0, transport=httpx.MockTransport(answer))
    group: Future[Sequence[Built]] = Future()
    group.set_result([_post("http://rp.test/a"), _post("http://rp.test/a")])
    try:
        refused, sent = sender.send_as_built([group], [[lambda: 0.5, lambda: 30.0]])
    finally:
        sender.close()
    assert isinstance(refused, tuple)
    assert isinstance(refused[1], TransientDeliveryError)
    assert "lease ran out" in refused[1].detail
    assert isinstance(sent, tuple)
    assert isinstance(sent[1], BackchannelResponse)
    assert sent[1].status_code == 200
    assert len(seen) == 1, "only the request with time enough left went out"
