"""The signing keys of each upstream transmitter: inline, or its JWKS fetched through the
egress policy and kept until a SET names a key it lacks.

A refresh on an unknown ``kid`` is bounded, so a stream of SETs with made-up key ids cannot
turn into a stream of fetches: one fetch at a time per transmitter (the others wait for its
result), and none sooner than ``jwks_min_refresh`` after the previous one.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from orchestrator.egress import EgressPolicy
from orchestrator.errors import DeliveryError, UnavailableError
from orchestrator.ssf_transmitters import SsfTransmitter
from protocols import BackchannelRequest

__all__ = ["Fetch", "TransmitterKeys", "fetch_jwks"]

#: Fetches a JWKS document by URL (``fetch_jwks`` with the service's egress policy).
Fetch = Callable[[str], Awaitable[Mapping[str, Any]]]


async def fetch_jwks(
    url: str, *, egress: EgressPolicy, timeout: float, body_limit: int
) -> Mapping[str, Any]:
    """The JWKS at ``url``; :class:`UnavailableError` naming the URL when it cannot be had
    (refused by the egress policy, unreachable, not 200, not JSON)."""
    from orchestrator.http_exchange import AiohttpExchange

    exchange = AiohttpExchange(max_connections=2, body_limit=body_limit, egress=egress)
    request = BackchannelRequest(
        url=url, content=b"", headers={"Accept": "application/json"}, method="GET"
    )
    try:
        answer = await asyncio.wait_for(exchange(request), timeout)
    except (DeliveryError, TimeoutError) as exc:
        raise UnavailableError(f"the JWKS at {url} cannot be fetched: {exc}") from None
    finally:
        await exchange.aclose()
    if answer.status_code != 200:
        raise UnavailableError(f"the JWKS at {url} answered {answer.status_code}")
    try:
        document = json.loads(answer.content)
    except ValueError:
        raise UnavailableError(f"the JWKS at {url} is not JSON") from None
    if not isinstance(document, dict):
        raise UnavailableError(f"the JWKS at {url} is not a JSON object")
    return document


class TransmitterKeys:
    """One transmitter's verification keys by ``kid``, refreshed as the module says."""

    def __init__(
        self,
        transmitter: SsfTransmitter,
        fetch: Fetch,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._transmitter = transmitter
        self._fetch = fetch
        self._clock = clock
        self._keys: dict[str | None, Any] | None = (
            _usable(transmitter.jwks) if transmitter.jwks is not None else None
        )
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()
        #: How many times the JWKS was fetched (the bound on refreshes is tested on it).
        self.fetches = 0

    async def key(self, kid: str | None) -> Any | None:
        """The public key ``kid`` names (with no ``kid``: the only key), else ``None``."""
        keys = self._keys
        if keys is None or (_pick(keys, kid) is None and self._may_refresh()):
            keys = await self._refresh(seen=keys)
        return _pick(keys, kid)

    def _may_refresh(self) -> bool:
        if self._transmitter.jwks_url is None:
            return False
        if self._fetched_at is None:
            return True
        return self._clock() - self._fetched_at >= self._transmitter.jwks_min_refresh

    async def _refresh(self, seen: dict[str | None, Any] | None) -> dict[str | None, Any]:
        async with self._lock:
            if self._keys is not seen and self._keys is not None:
                return self._keys  # another request refreshed while this one waited
            url = self._transmitter.jwks_url
            assert url is not None
            self._fetched_at = self._clock()
            self.fetches += 1
            self._keys = _usable(await self._fetch(url))
            return self._keys


def _usable(document: Mapping[str, Any]) -> dict[str | None, Any]:
    """The signing keys of a JWKS by ``kid`` (a key without one under ``None``); keys for
    encryption and keys of an unknown type are left out."""
    from jwt import PyJWK
    from jwt.exceptions import PyJWKError

    found: dict[str | None, Any] = {}
    entries = document.get("keys")
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        try:
            jwk = PyJWK(entry)
        except (PyJWKError, ValueError, TypeError, KeyError):
            continue
        kid = entry.get("kid")
        found[kid if isinstance(kid, str) else None] = jwk.key
    return found


def _pick(keys: Mapping[str | None, Any], kid: str | None) -> Any | None:
    if kid is not None:
        return keys.get(kid)
    return next(iter(keys.values())) if len(keys) == 1 else None
