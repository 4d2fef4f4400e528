"""The one place that owns the network: concurrent HTTP with global and per-host limits.

Actor threads hand a batch of requests to one event loop per process and wait for the
answers, so a logout touching 100 providers takes about as long as the slowest one.

The client is httpx over aiohttp's connection pool (``httpx-aiohttp``): measured here
(``bench/http_transports.py``), httpx's own pool spent ~11 ms of CPU per request with 64
in flight, the aiohttp pool ~1 ms. Tests inject an ``httpx.MockTransport`` instead.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Sequence
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from orchestrator.errors import DeliveryError, PermanentDeliveryError, TransientDeliveryError
from protocols import BackchannelRequest, BackchannelResponse

__all__ = ["HttpSender", "SendResult"]

SendResult = BackchannelResponse | DeliveryError
_T = TypeVar("_T")


def _aiohttp_transport(max_concurrency: int) -> AiohttpTransport:
    def session() -> aiohttp.ClientSession:  # made on first use, inside the sender's loop
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max_concurrency, limit_per_host=0),
            cookie_jar=aiohttp.DummyCookieJar(),  # never keep a cookie
        )

    return AiohttpTransport(client=session)


class HttpSender:
    """Send requests concurrently; never follow redirects; cap every body read.

    Thread-safe: :meth:`send_all` may be called from any thread but the sender's own.
    """

    def __init__(
        self,
        *,
        timeout: float = 5.0,
        body_limit: int = 64 * 1024,
        max_concurrency: int = 64,
        per_host: int = 8,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._timeout = timeout
        self._body_limit = body_limit
        self._per_host = per_host
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="logout-sender", daemon=True
        )
        self._thread.start()
        self._client = self._call(self._make_client(max_concurrency, transport))
        self._global = asyncio.Semaphore(max_concurrency)
        self._hosts: dict[str, asyncio.Semaphore] = {}

    async def _make_client(
        self, max_concurrency: int, transport: httpx.AsyncBaseTransport | None
    ) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            timeout=httpx.Timeout(self._timeout),
            follow_redirects=False,
            trust_env=False,
            # Never keep a cookie: one user's logout must not carry into another's.
            cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
            limits=httpx.Limits(
                max_connections=max_concurrency, max_keepalive_connections=max_concurrency
            ),
            transport=transport or _aiohttp_transport(max_concurrency),
        )

    def _call(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def send_all(self, requests: Sequence[BackchannelRequest]) -> list[SendResult]:
        """Send every request at once (within the limits); one result per request, in order."""
        if not requests:
            return []
        return self._call(self._send_all(requests))

    async def _send_all(self, requests: Sequence[BackchannelRequest]) -> list[SendResult]:
        return list(await asyncio.gather(*(self._send(r) for r in requests)))

    def _host_limit(self, url: str) -> asyncio.Semaphore:
        host = urlsplit(url).netloc.lower()
        semaphore = self._hosts.get(host)
        if semaphore is None:
            semaphore = self._hosts[host] = asyncio.Semaphore(self._per_host)
        return semaphore

    async def _send(self, request: BackchannelRequest) -> SendResult:
        # Per host first: a request queued behind a busy host must not hold a global slot.
        async with self._host_limit(request.url), self._global:
            try:
                async with asyncio.timeout(self._timeout):
                    return await self._exchange(request)
            except TimeoutError:
                return TransientDeliveryError(f"no answer within {self._timeout:g} s")
            except httpx.TimeoutException as exc:
                cause = exc.__cause__
                if isinstance(cause, aiohttp.ClientConnectorError):  # refused, unreachable
                    return TransientDeliveryError(f"connection failed: {cause}")
                return TransientDeliveryError(f"no answer within {self._timeout:g} s")
            except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
                return PermanentDeliveryError(f"unusable URL: {exc}")
            except (httpx.TransportError, aiohttp.ClientError, OSError) as exc:
                return TransientDeliveryError(f"connection failed: {type(exc).__name__}: {exc}")

    async def _exchange(self, request: BackchannelRequest) -> BackchannelResponse:
        async with self._client.stream(
            request.method, request.url, content=request.content, headers=dict(request.headers)
        ) as response:
            body = bytearray()
            if response.is_stream_consumed:  # a transport that read the body already
                body.extend(response.content[: self._body_limit])
            else:
                async for chunk in response.aiter_raw():
                    body.extend(chunk)
                    if len(body) >= self._body_limit:
                        break
            return BackchannelResponse(
                status_code=response.status_code,
                headers={k.lower(): v for k, v in response.headers.items()},
                content=bytes(body[: self._body_limit]),
            )

    def close(self) -> None:
        """Close the client and stop the loop."""
        if not self._loop.is_running():
            return
        self._call(self._client.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()
