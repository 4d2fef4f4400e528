"""The one place that owns the network: concurrent HTTP with global and per-host limits.

Actor threads hand a batch of requests to one event loop per process and wait for the
answers, so a logout touching 100 providers takes about as long as the slowest one. With
:meth:`HttpSender.send_as_built` requests go out as soon as their group of tokens is signed,
so signing the last tokens overlaps the first exchanges.

The exchange itself is aiohttp's client by default (see :mod:`orchestrator.http_exchange`
for the measured reasons); tests inject an ``httpx.MockTransport`` through ``transport=``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine, Hashable, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

import httpx

from orchestrator.egress import EgressPolicy
from orchestrator.errors import DeliveryError, TransientDeliveryError
from orchestrator.http_exchange import AiohttpExchange, Exchange, HttpxExchange
from orchestrator.metrics import observe_attempt
from protocols import BackchannelRequest, BackchannelResponse

__all__ = ["Built", "HttpSender", "SendResult", "Sent", "TimeLeft"]

SendResult = BackchannelResponse | DeliveryError
#: What building one request gave: the request, or why it could not be built.
Built = BackchannelRequest | DeliveryError
#: A request, what sending it gave and the seconds the exchange took (None: it was never
#: started), or why the request could not be built (nothing was sent).
Sent = tuple[BackchannelRequest, SendResult, float | None] | DeliveryError
#: Seconds the attempt behind a request may still use (its lease), asked when it could start.
TimeLeft = Callable[[], float]
_T = TypeVar("_T")


class HttpSender:
    """Send requests concurrently; never follow redirects; cap every body read.

    Thread-safe: :meth:`send_all` may be called from any thread but the sender's own.
    ``egress`` is the destination policy of the default (aiohttp) exchange; without it
    every internal address is refused (:mod:`orchestrator.egress`). Per-host limits are
    keyed by the addresses a host resolves to, so aliases of one host share one limit.
    """

    def __init__(
        self,
        *,
        timeout: float = 5.0,
        body_limit: int = 64 * 1024,
        max_concurrency: int = 64,
        per_host: int = 8,
        transport: httpx.AsyncBaseTransport | None = None,
        egress: EgressPolicy | None = None,
    ) -> None:
        self._timeout = timeout
        self._per_host = per_host
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="logout-sender", daemon=True
        )
        self._thread.start()
        self._exchange: Exchange
        if transport is None:
            self._exchange = AiohttpExchange(
                max_connections=max_concurrency, body_limit=body_limit, egress=egress
            )
        else:
            self._exchange = self._call(self._httpx(transport, body_limit))
        self._global = asyncio.Semaphore(max_concurrency)
        self._hosts: dict[Hashable, asyncio.Semaphore] = {}

    async def _httpx(self, transport: httpx.AsyncBaseTransport, body_limit: int) -> HttpxExchange:
        return HttpxExchange(transport, timeout=self._timeout, body_limit=body_limit)

    def _call(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def send_all(self, requests: Sequence[BackchannelRequest]) -> list[SendResult]:
        """Send every request at once (within the limits); one result per request, in order."""
        if not requests:
            return []
        return self._call(self._send_all(requests))

    def send_as_built(
        self,
        groups: Sequence[Future[Sequence[Built]]],
        time_left: Sequence[Sequence[TimeLeft | None]] = (),
    ) -> list[Sent]:
        """Send each request as soon as its group is built; one item per build, in order.

        ``groups`` are futures of another executor (e.g. a signing thread pool), each giving
        the builds of a few consecutive requests: a group's requests go out once it is done,
        while later groups are still being built (one hand-over to the sender's loop per
        group, not per request). A build that gave a :class:`DeliveryError` is returned as it
        is, and nothing is sent for it. ``time_left`` (one sequence per group, one entry per
        build, or none) says how long each attempt still owns its delivery: a request whose
        turn comes when less than the timeout is left is not sent (a transient error says
        so), since its answer could come after its lease ended.
        """
        if not groups:
            return []
        if time_left and len(time_left) != len(groups):
            raise ValueError(f"{len(time_left)} time_left sequences for {len(groups)} groups")
        lefts = list(time_left) or [()] * len(groups)
        return self._call(self._send_as_built(groups, lefts))

    async def _send_all(self, requests: Sequence[BackchannelRequest]) -> list[SendResult]:
        sent = await asyncio.gather(*(self._send(r) for r in requests))
        return [result for result, _seconds in sent]

    async def _send_as_built(
        self,
        groups: Sequence[Future[Sequence[Built]]],
        time_left: Sequence[Sequence[TimeLeft | None]],
    ) -> list[Sent]:
        sends = (self._send_group(g, left) for g, left in zip(groups, time_left, strict=True))
        return [item for items in await asyncio.gather(*sends) for item in items]

    async def _send_group(
        self, group: Future[Sequence[Built]], time_left: Sequence[TimeLeft | None]
    ) -> list[Sent]:
        builds = await asyncio.wrap_future(group)
        lefts = list(time_left) or [None] * len(builds)
        sends = (self._send_built(b, left) for b, left in zip(builds, lefts, strict=True))
        return list(await asyncio.gather(*sends))

    async def _send_built(self, request: Built, time_left: TimeLeft | None) -> Sent:
        if isinstance(request, DeliveryError):
            return request
        return (request, *await self._send(request, time_left))

    def _host_limit(self, host: Hashable) -> asyncio.Semaphore:
        semaphore = self._hosts.get(host)
        if semaphore is None:
            semaphore = self._hosts[host] = asyncio.Semaphore(self._per_host)
        return semaphore

    async def _send(
        self, request: BackchannelRequest, time_left: TimeLeft | None = None
    ) -> tuple[SendResult, float | None]:
        """What sending ``request`` gave, and the seconds its exchange took (None when it
        was never started: the host was not resolved, egress refused it, or the lease ran
        out)."""
        try:  # the resolved host: aliases of one host share its limit
            async with asyncio.timeout(self._timeout):
                host = await self._exchange.destination(request.url)
        except TimeoutError:
            error = TransientDeliveryError(f"host name not resolved within {self._timeout:g} s")
            return error, None
        except DeliveryError as exc:  # the egress policy refuses it: nothing is sent
            return exc, None
        # Per host first: a request queued behind a busy host must not hold a global slot.
        async with self._host_limit(host), self._global:
            if time_left is not None and time_left() <= self._timeout:
                error = TransientDeliveryError(
                    "not sent: the attempt's lease ran out while it waited for a connection slot"
                )
                return error, None
            started = time.perf_counter()
            result: SendResult
            try:
                async with asyncio.timeout(self._timeout):
                    result = await self._exchange(request)
            except TimeoutError:
                result = TransientDeliveryError(f"no answer within {self._timeout:g} s")
            except DeliveryError as exc:
                result = exc
            finally:
                seconds = time.perf_counter() - started
                observe_attempt(seconds)
            return result, seconds

    def close(self) -> None:
        """Close the client and stop the loop."""
        if not self._loop.is_running():
            return
        self._call(self._exchange.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()
