"""The egress policy on provider endpoints as they are registered (``providers load``).

Literal addresses in any notation and refused host names are refused at once; other names
are resolved and refused when an address they give is refused. A name that does not
resolve at load time is only a warning: the check at connection time
(:class:`orchestrator.http_exchange.EgressConnector`) decides.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from orchestrator.egress import EgressPolicy, literal_address

__all__ = ["LOAD_RESOLVE_TIMEOUT", "Resolve", "Screening", "screen_urls", "system_resolve"]


#: How a load-time check resolves a host: its addresses, or ``OSError``.
Resolve = Callable[[str, int], Sequence[str]]
#: How long ``providers load`` waits for every name to resolve before it warns and goes on.
LOAD_RESOLVE_TIMEOUT: Final = 5.0


def system_resolve(host: str, port: int) -> list[str]:
    """The addresses the system resolver gives for ``host`` (as a connection would)."""
    return [str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


@dataclass(frozen=True, slots=True)
class Screening:
    """What the load-time check found for one URL: a refusal, a warning, or neither."""

    refusal: str | None = None
    warning: str | None = None


def screen_urls(
    policy: EgressPolicy,
    urls: Sequence[str],
    *,
    resolve: Resolve | None = None,
    timeout: float = LOAD_RESOLVE_TIMEOUT,
) -> list[Screening]:
    """The egress policy on URLs being registered, one :class:`Screening` per URL.

    A literal address (any notation) or a refused host name is refused at once; a name is
    resolved (all of them side by side, for at most ``timeout`` seconds) and refused when an
    address it gives is refused. A name that does not resolve now is a warning: the check
    when a request is sent decides. ``resolve`` defaults to :func:`system_resolve`.
    """
    lookup = resolve or system_resolve
    hosts: dict[str, int] = {}
    for url in urls:
        host, port = _host_port(url)
        if host and policy.name_refusal(host) is None and literal_address(host) is None:
            hosts.setdefault(host, port)
    names = [h for h in hosts if not policy.admits_host(h)]
    answers: dict[str, Sequence[str] | str] = {}
    if names:
        pool = ThreadPoolExecutor(min(len(names), 16), thread_name_prefix="logout-resolve")
        futures = {pool.submit(lookup, h, hosts[h]): h for h in names}
        done, _ = wait(futures, timeout=timeout)
        pool.shutdown(wait=False, cancel_futures=True)
        for future, host in futures.items():
            error = future.exception() if future in done else None
            if future not in done:
                answers[host] = f"was not resolved within {timeout:g} s"
            elif isinstance(error, OSError | ValueError):  # gaierror; a name IDNA refuses
                answers[host] = (
                    f"does not resolve now ({getattr(error, 'strerror', None) or error})"
                )
            else:
                answers[host] = future.result()
    return [_screen(policy, url, answers) for url in urls]


def _host_port(url: str) -> tuple[str, int]:
    try:
        parts = urlsplit(url)
        return parts.hostname or "", parts.port or (80 if parts.scheme == "http" else 443)
    except ValueError:  # a bad port or IPv6 host: the URI check reports it
        return "", 0


def _screen(
    policy: EgressPolicy, url: str, answers: Mapping[str, Sequence[str] | str]
) -> Screening:
    host, _ = _host_port(url)
    if not host:
        return Screening()
    refused = policy.name_refusal(host)
    if refused is not None:
        return Screening(refusal=refused)
    answer = answers.get(host, ())
    if isinstance(answer, str):
        return Screening(
            warning=f"{host!r} {answer}; the egress policy is applied when a request is sent"
        )
    for text in answer:
        address = literal_address(text)
        if address is not None:
            refused = policy.refusal(host, address)
            if refused is not None:
                return Screening(refusal=refused)
    return Screening()
