"""Unit tests of the egress policy: every refused address class, at the connector, with no
traffic; the allow-list; a real loopback RP admitted through it; per-host limits by address."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import aiohttp
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from orchestrator import http_exchange
from orchestrator.egress import EgressPolicy, parse_allow_entry
from orchestrator.errors import ConfigurationError, EgressRefusedError, PermanentDeliveryError
from orchestrator.http_exchange import DESTINATION_TTL, EgressConnector
from orchestrator.sender import HttpSender
from orchestrator.settings import Settings
from protocols import BackchannelRequest, BackchannelResponse


class _Resolver(AbstractResolver):
    """A DNS stand-in: each name answers the addresses given, in turn (rebinding)."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        turns = self.answers[host]
        addresses = turns.pop(0) if len(turns) > 1 else turns[0]
        return [
            ResolveResult(
                hostname=host,
                host=a,
                port=port,
                family=socket.AF_INET6 if ":" in a else socket.AF_INET,
                proto=0,
                flags=0,
            )
            for a in addresses
        ]

    async def close(self) -> None:
        return None


def _addresses(
    host: str, policy: EgressPolicy | None = None, answers: dict[str, list[list[str]]] | None = None
) -> tuple[tuple[str, ...] | str, list[str]]:
    """What the connector gives for ``host`` (its addresses, or the refusal), and which
    names it asked the resolver; no connection is ever made."""

    async def run() -> tuple[tuple[str, ...] | str, list[str]]:
        resolver = _Resolver(answers or {})
        connector = EgressConnector(
            policy or EgressPolicy(), resolver=resolver, use_dns_cache=False
        )
        try:
            return await connector.addresses(host, 443), resolver.asked
        except EgressRefusedError as exc:
            return exc.detail, resolver.asked
        finally:
            await connector.close()

    return asyncio.run(run())


# -- every refused class, in every notation ----------------------------------------------

REFUSED_LITERALS = [
    ("127.0.0.1", "a loopback address"),
    ("127.1", "a loopback address"),
    ("0x7f.1", "a loopback address"),
    ("2130706433", "a loopback address"),
    ("0177.0.0.1", "a loopback address"),
    ("::1", "a loopback address"),
    ("::ffff:127.0.0.1", "a loopback address"),
    ("10.0.0.1", "a private address"),
    ("172.16.5.4", "a private address"),
    ("192.168.1.1", "a private address"),
    ("::ffff:10.0.0.1", "a private address"),
    ("169.254.1.1", "a link-local address"),
    ("fe80::1", "a link-local address"),
    ("fc00::1", "a unique-local address"),
    ("fd12:3456::1", "a unique-local address"),
    ("224.0.0.1", "a multicast address"),
    ("ff02::1", "a multicast address"),
    ("0.0.0.0", "the unspecified address"),  # noqa: S104 (a destination, not a bind)
    ("::", "the unspecified address"),
    ("240.0.0.1", "a reserved (non-global) address"),
    ("255.255.255.255", "a reserved (non-global) address"),
    ("100.64.0.1", "a reserved (non-global) address"),
    ("192.0.2.1", "a reserved (non-global) address"),
    ("169.254.169.254", "a cloud metadata address"),
    ("2852039166", "a cloud metadata address"),
    ("0xa9fea9fe", "a cloud metadata address"),
    ("::ffff:169.254.169.254", "a cloud metadata address"),
    ("64:ff9b::a9fe:a9fe", "a cloud metadata address"),
    ("2002:a9fe:a9fe::1", "a cloud metadata address"),
    ("fd00:ec2::254", "a cloud metadata address"),
    ("100.100.100.200", "a cloud metadata address"),
    ("192.0.0.192", "a cloud metadata address"),
]


@pytest.mark.parametrize(("host", "reason"), REFUSED_LITERALS)
def test_literal_address_of_every_refused_class_is_refused(host: str, reason: str) -> None:
    """The connector refuses each class of literal address, in any notation, before it
    resolves or connects; the reason names the class, the policy and egress_allow."""
    detail, asked = _addresses(host)
    assert isinstance(detail, str)
    assert detail.startswith("refused by the egress policy: ")
    assert reason in detail
    assert detail.endswith("add the host or its network to egress_allow to admit it")
    assert asked == []


@pytest.mark.parametrize("host", ["metadata.google.internal", "METADATA.goog.", "metadata"])
def test_metadata_host_names_are_refused_without_resolving(host: str) -> None:
    """Cloud metadata host names are refused by name: no DNS question is asked."""
    detail, asked = _addresses(host, answers={host: [["93.184.216.34"]]})
    assert isinstance(detail, str)
    assert "a cloud metadata host name" in detail
    assert asked == []


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (["10.1.2.3"], "a private address"),
        (["169.254.169.254"], "a cloud metadata address"),
        (["127.0.0.1"], "a loopback address"),
        (["fd00:ec2::254"], "a cloud metadata address"),
        (["93.184.216.34", "192.168.0.7"], "a private address"),
    ],
)
def test_name_resolving_to_a_refused_range_is_refused(answer: list[str], reason: str) -> None:
    """A name is refused when any address it resolves to is; the reason says 'resolves to'
    and does not name the address."""
    detail, asked = _addresses("rp.example", answers={"rp.example": [answer]})
    assert detail == (
        f"refused by the egress policy: 'rp.example' resolves to {reason}; "
        "add the host or its network to egress_allow to admit it"
    )
    assert asked == ["rp.example"]


def test_public_addresses_pass() -> None:
    """A name resolving to public addresses, and a public literal, pass unchanged."""
    answers = {"rp.example": [["2606:2800:220:1::1", "93.184.216.34"]]}
    assert _addresses("rp.example", answers=answers)[0] == ("2606:2800:220:1::1", "93.184.216.34")
    assert _addresses("8.8.8.8")[0] == ("8.8.8.8",)


def test_dns_rebinding_is_checked_on_every_connection() -> None:
    """A name that answered a public address first and a private one next is refused on the
    request that would connect to the private one (the check runs at connection time)."""

    async def run() -> tuple[int, str, list[str]]:
        resolver = _Resolver({"rp.example": [["93.184.216.34"], ["10.0.0.5"]]})
        connector = EgressConnector(EgressPolicy(), resolver=resolver, use_dns_cache=False)
        try:
            first = len(await connector.addresses("rp.example", 443))
            async with aiohttp.ClientSession(connector=connector) as session:
                with pytest.raises(EgressRefusedError) as refused:
                    await session.get("https://rp.example/logout")
            return first, refused.value.detail, resolver.asked
        finally:
            await connector.close()

    first, detail, asked = asyncio.run(run())
    assert first == 1
    assert "'rp.example' resolves to a private address" in detail
    assert asked == ["rp.example", "rp.example"]


def test_a_destination_is_resolved_once_per_dns_lifetime(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The per-host limit's key of a URL is resolved and checked once per DESTINATION_TTL
    (as long as aiohttp keeps the DNS answer), not for every request; a refusal is never
    remembered, so a refused destination is asked again (and refused again) each time."""
    answers = {"rp.example": [["93.184.216.34"]], "inside.example": [["10.0.0.5"]]}
    resolver = _Resolver(answers)
    clock = [1000.0]
    monkeypatch.setattr(http_exchange, "_clock", lambda: clock[0])
    original = http_exchange.EgressConnector

    def connector(policy: EgressPolicy, **options: Any) -> EgressConnector:
        return original(policy, resolver=resolver, use_dns_cache=False, **options)

    monkeypatch.setattr(http_exchange, "EgressConnector", connector)

    async def run() -> list[Any]:
        exchange = http_exchange.AiohttpExchange(max_connections=4, body_limit=1024)
        try:
            seen: list[Any] = []
            for step in (0.0, 5.0, DESTINATION_TTL):  # remembered, remembered, expired
                clock[0] += step
                seen.append(await exchange.destination("https://rp.example/logout"))
            for _ in range(2):
                with pytest.raises(EgressRefusedError):
                    await exchange.destination("https://inside.example/logout")
            return seen
        finally:
            await exchange.aclose()

    seen = asyncio.run(run())
    assert seen == [(("93.184.216.34",), 443)] * 3
    assert resolver.asked == ["rp.example", "rp.example", "inside.example", "inside.example"]


# -- the allow-list ---------------------------------------------------------------------


def test_allow_list_admits_networks_addresses_and_names_only() -> None:
    """egress_allow admits what it lists (a CIDR, an address, a host name whatever it
    resolves to, an IPv4 network for a mapped address) and nothing else."""
    policy = EgressPolicy.from_entries(["10.20.0.0/16", "fd12::1", "RP.Internal."])
    answers = {"rp.internal": [["192.168.3.3"]], "other.internal": [["192.168.3.3"]]}
    assert _addresses("10.20.3.4", policy)[0] == ("10.20.3.4",)
    assert _addresses("::ffff:10.20.3.4", policy)[0] == ("10.20.3.4",)
    assert _addresses("fd12::1", policy)[0] == ("fd12::1",)
    assert _addresses("rp.internal", policy, answers)[0] == ("192.168.3.3",)
    assert "a private address" in str(_addresses("other.internal", policy, answers)[0])
    assert "a private address" in str(_addresses("10.21.0.1", policy)[0])
    assert "a unique-local address" in str(_addresses("fd12::2", policy)[0])


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("10.0.0.0/33", "is not a CIDR network"),
        ("", "an empty entry"),
        ("0x7f.1", "neither a CIDR network, an address in standard notation, nor a host name"),
        ("rp..internal", "neither a CIDR network"),
    ],
)
def test_bad_allow_entry_is_refused_with_its_position(
    entry: str, problem: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad egress_allow entry is a configuration error naming the variable, the entry's
    position and what a valid entry looks like."""
    with pytest.raises(ValueError, match=problem):
        parse_allow_entry(entry)
    monkeypatch.setenv("LOGOUT_EGRESS_ALLOW", f"127.0.0.1,{entry}" if entry else "127.0.0.1,,")
    if entry:
        with pytest.raises(ConfigurationError) as refused:
            Settings.load(None)
        assert str(refused.value).startswith(
            "invalid settings: LOGOUT_EGRESS_ALLOW (environment): egress_allow: entry 2: "
        )
        assert problem in str(refused.value)


def test_allow_list_reads_from_toml_and_environment(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """egress_allow is a TOML list, or a comma-separated (or JSON) environment variable."""
    config = tmp_path / "logout.toml"
    config.write_text('egress_allow = ["10.0.0.0/8", "rp.internal"]\n', encoding="utf-8")
    assert Settings.load(config).egress_allow == ["10.0.0.0/8", "rp.internal"]
    monkeypatch.setenv("LOGOUT_EGRESS_ALLOW", "127.0.0.1, rp.internal")
    assert Settings.load(config).egress_allow == ["127.0.0.1", "rp.internal"]
    assert Settings.load(None, egress_allow=None).egress_allow == ["127.0.0.1", "rp.internal"]


# -- through the sender, against a real server on 127.0.0.1 -----------------------------


class _Counting(BaseHTTPRequestHandler):
    """Answers 200 after ``delay``; counts requests and the most served at once."""

    seen: ClassVar[int] = 0
    busy: ClassVar[int] = 0
    most: ClassVar[int] = 0
    delay: ClassVar[float] = 0.0
    lock: ClassVar[threading.Lock] = threading.Lock()

    def do_POST(self) -> None:
        cls = type(self)
        with cls.lock:
            cls.seen += 1
            cls.busy += 1
            cls.most = max(cls.most, cls.busy)
        time.sleep(cls.delay)
        self.rfile.read(int(self.headers.get("content-length", "0")))
        with cls.lock:  # before the answer: once it is sent, the client may send the next
            cls.busy -= 1
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def rp() -> Iterator[tuple[int, type[_Counting]]]:
    """A real HTTP RP on 127.0.0.1 (an ephemeral port) and its counters."""
    handler = type("Handler", (_Counting,), {"seen": 0, "busy": 0, "most": 0, "delay": 0.0})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _send(sender: HttpSender, urls: Sequence[str]) -> list[Any]:
    try:
        return list(sender.send_all([BackchannelRequest(url=u, content=b"x=1") for u in urls]))
    finally:
        sender.close()


def test_loopback_rp_is_refused_by_default_and_nothing_is_sent(
    rp: tuple[int, type[_Counting]],
) -> None:
    """Without egress_allow the sender refuses a listening loopback RP permanently (the type
    says no retry) and the RP sees no request."""
    port, handler = rp
    urls = [f"http://127.0.0.1:{port}/bc", f"http://localhost:{port}/bc"]
    results = _send(HttpSender(timeout=2.0), urls)
    assert all(isinstance(r, EgressRefusedError) for r in results)
    assert all(isinstance(r, PermanentDeliveryError) for r in results)
    assert "'127.0.0.1' is a loopback address" in results[0].detail
    assert "'localhost' resolves to a loopback address" in results[1].detail
    assert handler.seen == 0


@pytest.mark.parametrize("entry", ["127.0.0.1", "127.0.0.0/8", "localhost"])
def test_internal_rp_admitted_by_egress_allow_is_served(
    rp: tuple[int, type[_Counting]], entry: str
) -> None:
    """An internal RP on 127.0.0.1 listed in egress_allow (address, CIDR or host name) gets
    the request and its answer comes back."""
    port, handler = rp
    host = "localhost" if entry == "localhost" else "127.0.0.1"
    [result] = _send(
        HttpSender(timeout=2.0, egress=EgressPolicy.from_entries([entry])),
        [f"http://{host}:{port}/bc"],
    )
    if isinstance(result, EgressRefusedError):
        pytest.fail(f"refused: {result.detail}")
    assert isinstance(result, BackchannelResponse)
    assert result.status_code == 200
    assert handler.seen == 1


def test_per_host_limit_is_shared_by_aliases_of_one_address(
    rp: tuple[int, type[_Counting]],
) -> None:
    """Two spellings of one address (127.0.0.1 and ::ffff:127.0.0.1) share one per-host
    limit: with per_host = 1 the RP never serves two requests at once."""
    port, handler = rp
    handler.delay = 0.15
    urls = [f"http://127.0.0.1:{port}/a", f"http://[::ffff:127.0.0.1]:{port}/b"] * 2
    sender = HttpSender(timeout=5.0, per_host=1, egress=EgressPolicy.from_entries(["127.0.0.1"]))
    results = _send(sender, urls)
    assert [getattr(r, "status_code", r) for r in results] == [200] * 4
    assert handler.seen == 4
    assert handler.most == 1


def test_connector_refuses_a_literal_loopback_on_the_connection_path(
    rp: tuple[int, type[_Counting]],
) -> None:
    """aiohttp connecting through the egress connector (not the sender's pre-resolution) to
    a listening RP at a literal loopback address: refused, and the RP sees nothing."""
    port, handler = rp

    async def run() -> str:
        async with aiohttp.ClientSession(connector=EgressConnector(EgressPolicy())) as session:
            with pytest.raises(EgressRefusedError) as refused:
                await session.post(f"http://127.0.0.1:{port}/bc", data=b"x=1")
            return refused.value.detail

    assert "'127.0.0.1' is a loopback address" in asyncio.run(run())
    assert handler.seen == 0
