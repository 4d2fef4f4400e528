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

The aiohttp exchange owns the network, so it enforces the egress policy
(:mod:`orchestrator.egress`): its connector checks every address a host resolves to, and
every literal address, where the socket address is chosen; a refusal is an
:class:`~orchestrator.errors.EgressRefusedError` and nothing is sent. An injected httpx
transport is its own network (a ``MockTransport`` has none) and applies no policy.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Mapping, Sequence
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
import httpx
from aiohttp.abc import ResolveResult
from yarl import URL

from orchestrator.egress import EgressPolicy, literal_address
from orchestrator.errors import EgressRefusedError, PermanentDeliveryError, TransientDeliveryError
from protocols import BackchannelRequest, BackchannelResponse

__all__ = ["DESTINATION_TTL", "AiohttpExchange", "EgressConnector", "Exchange", "HttpxExchange"]

#: Seconds a URL's destination (the addresses it resolved to, checked) is remembered as the
#: key of its per-host limit, as long as aiohttp keeps a DNS answer (``ttl_dns_cache``). Only
#: that key is remembered: every new connection resolves and checks its addresses again.
DESTINATION_TTL = 10
#: Destinations remembered at most (URLs are the providers'; past it, all are forgotten).
_DESTINATIONS_MAX = 10_000
#: The clock of that memory (a test sets its own).
_clock = time.monotonic


class Exchange(Protocol):
    """Send one request; return the answer or raise a ``DeliveryError`` subclass."""

    async def __call__(self, request: BackchannelRequest) -> BackchannelResponse: ...

    async def destination(self, url: str) -> Hashable:
        """What ``url`` connects to, as the key of its per-host limit (aliases share one);
        raise :class:`EgressRefusedError` when the egress policy refuses it."""
        ...

    async def aclose(self) -> None: ...


def _lowered(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


class EgressConnector(aiohttp.TCPConnector):
    """aiohttp's connector, refusing what the egress policy refuses where it picks the
    addresses to connect to: a host name or literal address (in any notation) before it is
    resolved, then every address the resolver (or aiohttp's DNS cache) gives for it."""

    def __init__(self, policy: EgressPolicy, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._policy = policy

    async def _resolve_host(
        self, host: str, port: int, traces: Sequence[Any] | None = None
    ) -> list[ResolveResult]:
        refused = self._policy.name_refusal(host)
        if refused is not None:
            raise EgressRefusedError(refused)
        results = await super()._resolve_host(host, port, traces=traces)
        for result in results:
            address = literal_address(result["host"])
            if address is None:
                raise EgressRefusedError(
                    f"refused by the egress policy: {host!r} resolved to an address it cannot read"
                )
            refused = self._policy.refusal(host, address)
            if refused is not None:
                raise EgressRefusedError(refused)
        return results

    async def addresses(self, host: str, port: int) -> tuple[str, ...]:
        """The addresses ``host`` connects to (sorted; an IPv4-mapped IPv6 address as its
        IPv4 address), checked as a connection is."""
        found = set()
        for result in await self._resolve_host(host, port):
            address = literal_address(result["host"])
            mapped = getattr(address, "ipv4_mapped", None)
            found.add(str(mapped or address))
        return tuple(sorted(found))


class AiohttpExchange:
    """aiohttp's client: one session (connection pool) made on first use, in the loop."""

    def __init__(
        self, *, max_connections: int, body_limit: int, egress: EgressPolicy | None = None
    ) -> None:
        self._max_connections = max_connections
        self._body_limit = body_limit
        self._egress = egress or EgressPolicy()
        self._session: aiohttp.ClientSession | None = None
        self._connector: EgressConnector | None = None
        self._destinations: dict[str, tuple[float, Hashable]] = {}

    async def destination(self, url: str) -> Hashable:
        """The sorted addresses and port ``url`` connects to (a name that does not resolve:
        the name, and the exchange reports the failure), remembered for
        :data:`DESTINATION_TTL` seconds when resolved (resolving and checking the addresses
        of every request cost ~7% of the fan-out's CPU)."""
        now = _clock()
        known = self._destinations.get(url)
        if known is not None and known[0] > now:
            return known[1]
        try:
            parsed = URL(url)
        except ValueError:
            return url  # the exchange says why it is unusable
        if parsed.host is None or parsed.port is None:
            return url
        self._client()
        assert self._connector is not None
        try:
            key = await self._connector.addresses(parsed.host, parsed.port), parsed.port
        except (aiohttp.ClientError, OSError):
            return parsed.host_port_subcomponent or url
        if len(self._destinations) >= _DESTINATIONS_MAX:
            self._destinations.clear()
        self._destinations[url] = (now + DESTINATION_TTL, key)
        return key

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._connector = EgressConnector(
                self._egress,
                limit=self._max_connections,
                limit_per_host=0,
                ttl_dns_cache=DESTINATION_TTL,
            )
            self._session = aiohttp.ClientSession(
                connector=self._connector,
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

    async def destination(self, url: str) -> Hashable:
        """The URL's host and port as written (the transport chooses where it connects)."""
        return urlsplit(url).netloc.lower()

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
