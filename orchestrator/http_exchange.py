"""One HTTP exchange: send a :class:`BackchannelRequest`, read a capped answer.

Two implementations behind one small interface, both used inside :class:`HttpSender`'s
event loop: aiohttp directly (the default; measured in ``bench/http_transports.py`` at
~0.3 ms of CPU per request with 64 in flight, against ~1 ms for httpx over aiohttp's pool
and 7-11 ms for httpx's own pool), and httpx over any ``httpx.AsyncBaseTransport`` (how
tests inject an ``httpx.MockTransport``, or a deployment a custom transport).

Both send exactly one request (redirects are returned, never followed), keep no cookies,
ignore proxy variables from the environment, read at most ``body_limit`` bytes of the
body, and raise :class:`~orchestrator.errors.DeliveryError` subclasses for failures, so
the caller never sees a library's own exception.
"""

from __future__ import annotations

from collections.abc import Mapping
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Protocol

import aiohttp
import httpx

from orchestrator.errors import PermanentDeliveryError, TransientDeliveryError
from protocols import BackchannelRequest, BackchannelResponse

__all__ = ["AiohttpExchange", "Exchange", "HttpxExchange"]


class Exchange(Protocol):
    """Send one request; return the answer or raise a ``DeliveryError`` subclass."""

    async def __call__(self, request: BackchannelRequest) -> BackchannelResponse: ...

    async def aclose(self) -> None: ...


def _lowered(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


class AiohttpExchange:
    """aiohttp's client: one session (connection pool) made on first use, in the loop."""

    def __init__(self, *, max_connections: int, body_limit: int) -> None:
        self._max_connections = max_connections
        self._body_limit = body_limit
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections, limit_per_host=0),
                cookie_jar=aiohttp.DummyCookieJar(),  # one user's logout never carries over
                auto_decompress=False,  # the cap applies to the bytes on the wire
                trust_env=False,
                timeout=aiohttp.ClientTimeout(total=None),  # HttpSender times each request
            )
        return self._session

    async def __call__(self, request: BackchannelRequest) -> BackchannelResponse:
        try:
            async with self._client().request(
                request.method,
                request.url,
                data=request.content,
                headers=dict(request.headers),
                allow_redirects=False,
            ) as response:
                body = bytearray()
                while len(body) < self._body_limit:
                    chunk = await response.content.read(self._body_limit - len(body))
                    if not chunk:
                        break
                    body += chunk
                return BackchannelResponse(
                    status_code=response.status,
                    headers=_lowered(response.headers),
                    content=bytes(body),
                )
        except (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError) as exc:
            raise PermanentDeliveryError(f"unusable URL: {exc}") from None
        except aiohttp.ClientConnectorError as exc:  # refused, unreachable, DNS, TLS
            raise TransientDeliveryError(f"connection failed: {exc}") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise TransientDeliveryError(
                f"connection failed: {type(exc).__name__}: {exc}"
            ) from None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class HttpxExchange:
    """httpx over the given transport (tests: ``httpx.MockTransport``)."""

    def __init__(
        self, transport: httpx.AsyncBaseTransport, *, timeout: float, body_limit: int
    ) -> None:
        self._timeout = timeout
        self._body_limit = body_limit
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            trust_env=False,
            cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
            transport=transport,
        )

    async def __call__(self, request: BackchannelRequest) -> BackchannelResponse:
        try:
            return await self._exchange(request)
        except httpx.TimeoutException:
            raise TransientDeliveryError(f"no answer within {self._timeout:g} s") from None
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise PermanentDeliveryError(f"unusable URL: {exc}") from None
        except (httpx.TransportError, OSError) as exc:
            raise TransientDeliveryError(
                f"connection failed: {type(exc).__name__}: {exc}"
            ) from None

    async def _exchange(self, request: BackchannelRequest) -> BackchannelResponse:
        async with self._client.stream(
            request.method, request.url, content=request.content, headers=dict(request.headers)
        ) as response:
            body = bytearray()
            if response.is_stream_consumed:  # a transport that read the body already
                body += response.content[: self._body_limit]
            else:
                async for chunk in response.aiter_raw():
                    body += chunk
                    if len(body) >= self._body_limit:
                        break
            return BackchannelResponse(
                status_code=response.status_code,
                headers=_lowered(response.headers),
                content=bytes(body[: self._body_limit]),
            )

    async def aclose(self) -> None:
        await self._client.aclose()
