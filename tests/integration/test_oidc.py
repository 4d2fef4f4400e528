"""OpenID Connect Back-Channel Logout end to end: a real worker signs logout tokens and posts
them to real HTTP relying parties, which verify each one with joserfc against the JWKS that
``logout-orchestrator keys jwks`` prints."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections import Counter
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet, import_key
from sqlalchemy import func, select

from orchestrator.outbox import event_message
from orchestrator.store import (
    Delivery,
    EventRecord,
    IdpSession,
    ProviderSession,
)
from orchestrator.validation import parse_event
from protocols.oidc import generate_key

from .support import (
    LoopbackServer,
    LoopbackServers,
    Stack,
    audit_rows,
    cli,
    closed_port,
    deliveries,
    event,
    logout_event,
    output,
    publish,
    session_record,
    wait_settled,
)

pytestmark = pytest.mark.integration

ISSUER = "https://idp.test"
BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
FORM = "application/x-www-form-urlencoded"

#: Every worker of this module: the OIDC handler only, and this issuer.
OIDC_ENV: Mapping[str, str] = {"LOGOUT_PROTOCOLS": "oidc", "LOGOUT_ISSUER": ISSUER}

# Retry fast, give up after three attempts, and call one second without an answer a timeout.
DELIVERY_SETTINGS: Mapping[str, str] = {
    "LOGOUT_DELIVERY_TIMEOUT": "1",
    "LOGOUT_RETRY_INITIAL_DELAY": "0.2",
    "LOGOUT_RETRY_MAX_DELAY": "2",
    "LOGOUT_DELIVERY_MAX_ATTEMPTS": "3",
}

_GENERATED = re.compile(r"kid (\S+) \((ES256|RS256)\) written to ")


# -- relying parties ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    """How a relying party answers one request; ``hang`` seconds of silence first."""

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    hang: float = 0.0


@dataclass(frozen=True, slots=True)
class Received:
    """One request as the relying party got it."""

    method: str
    path: str
    content_type: str | None
    body: bytes
    at: float  # time.monotonic()
    wall: float  # time.time(), to check the token's times as of its receipt


@dataclass(frozen=True, slots=True)
class LogoutToken:
    """A verified logout token and the request that carried it."""

    raw: str
    header: dict[str, Any]
    claims: dict[str, Any]
    request: Received


class RelyingParty(LoopbackServer):
    """A relying party's back-channel logout endpoint on 127.0.0.1 and an ephemeral port.

    Answers its n-th request with ``script[n - 1]`` (the last reply repeats) and remembers
    every request and when it answered.
    """

    def __init__(self, name: str, script: Sequence[Reply]) -> None:
        super().__init__(_Endpoint)
        self.name = name
        self.script = list(script) or [Reply()]
        self.received: list[Received] = []
        self.answered: list[tuple[float, int]] = []

    @property
    def url(self) -> str:
        return f"{self.base_url}/backchannel-logout"

    def requests(self) -> list[Received]:
        with self.lock:
            return list(self.received)

    def answers(self) -> list[tuple[float, int]]:
        with self.lock:
            return list(self.answered)


class _Endpoint(BaseHTTPRequestHandler):
    server: RelyingParty

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        request = Received(
            method=self.command,
            path=self.path,
            content_type=self.headers.get("Content-Type"),
            body=body,
            at=time.monotonic(),
            wall=time.time(),
        )
        with self.server.lock:
            self.server.received.append(request)
            number = len(self.server.received)
        reply = self.server.script[min(number, len(self.server.script)) - 1]
        try:
            if reply.hang:
                self.server.release.wait(reply.hang)
            with self.server.lock:
                self.server.answered.append((time.monotonic(), reply.status))
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            if reply.status != 204:
                self.send_header("Content-Length", "0")
            self.end_headers()
        except OSError:
            pass  # the worker gave up waiting (the timeout under test)

    # Every other method is recorded too: a logout must only ever be a POST.
    do_GET = do_PUT = do_HEAD = do_DELETE = do_PATCH = do_POST

    def log_message(self, format: str, *args: object) -> None:
        pass


class RelyingParties(LoopbackServers[RelyingParty]):
    """Starts relying parties for one test and stops them all afterwards."""

    def __call__(self, name: str, *script: Reply) -> RelyingParty:
        return self.start(RelyingParty(name, script))


@pytest.fixture
def rps() -> Iterator[RelyingParties]:
    """A factory of real HTTP relying parties, all stopped after the test."""
    parties = RelyingParties()
    try:
        yield parties
    finally:
        parties.close()


# -- verification, as a relying party does it -------------------------------------------


@dataclass(frozen=True, slots=True)
class Jwks:
    """The JWKS ``keys jwks`` printed, as JSON and as joserfc keys."""

    document: dict[str, Any]
    keys: KeySet

    @property
    def kids(self) -> list[str]:
        return [str(key["kid"]) for key in self.document["keys"]]

    def alg(self, kid: str) -> str:
        return str(next(key["alg"] for key in self.document["keys"] if key["kid"] == kid))


def parse_jwks(stdout: str) -> Jwks:
    """Read the JWKS; every ``kid`` must be joserfc's own RFC 7638 thumbprint of the key."""
    document: Any = json.loads(stdout)
    assert isinstance(document, dict), stdout
    assert document["keys"], "the JWKS publishes no key"
    for key in document["keys"]:
        assert key["use"] == "sig", key
        assert not {"d", "p", "q"} & set(key), "the JWKS publishes a private key"
        assert import_key(key).thumbprint() == key["kid"], key
    return Jwks(document, KeySet.import_key_set(json.loads(stdout)))


def verify(
    rp: RelyingParty,
    jwks: Jwks,
    *,
    client_id: str,
    kid: str,
    identities: Collection[tuple[str | None, str | None]],
) -> list[LogoutToken]:
    """Check every request ``rp`` got as a relying party must; return the tokens in order.

    ``identities``: the (sid, sub) pairs the tokens may name, one provider session each.
    """
    tokens: list[LogoutToken] = []
    for request in rp.requests():
        where = f"{rp.name} request {len(tokens) + 1}"
        assert request.method == "POST", f"{where}: {request.method}"
        assert request.content_type == FORM, f"{where}: content-type {request.content_type!r}"
        form = parse_qs(request.body.decode("ascii"), keep_blank_values=True, strict_parsing=True)
        assert list(form) == ["logout_token"], f"{where}: form fields {sorted(form)}"
        assert len(form["logout_token"]) == 1, f"{where}: several logout_token values"
        raw = form["logout_token"][0]
        decoded = jose_jwt.decode(raw, jwks.keys, algorithms=["ES256", "RS256"])
        header, claims = dict(decoded.header), dict(decoded.claims)

        assert header.get("typ") == "logout+jwt", f"{where}: header {header}"
        assert header.get("kid") == kid, f"{where}: signed with {header.get('kid')}, not {kid}"
        assert header["alg"] == jwks.alg(kid), f"{where}: header {header}"
        jose_jwt.JWTClaimsRegistry(
            now=int(request.wall),
            leeway=5,
            iss={"essential": True, "value": ISSUER},
            aud={"essential": True, "value": client_id},
            iat={"essential": True},
            exp={"essential": True},
            jti={"essential": True},
            events={"essential": True},
        ).validate(claims)
        assert claims["aud"] == client_id, f"{where}: aud {claims['aud']!r}"
        assert isinstance(claims["iat"], int), f"{where}: iat {claims['iat']!r}"
        assert isinstance(claims["exp"], int), f"{where}: exp {claims['exp']!r}"
        assert 0 < claims["exp"] - claims["iat"] <= 120, f"{where}: iat/exp {claims}"
        assert abs(claims["iat"] - request.wall) <= 10, f"{where}: iat far from now: {claims}"
        assert isinstance(claims["jti"], str), f"{where}: jti {claims}"
        assert claims["jti"], f"{where}: empty jti"
        assert claims["events"] == {BACKCHANNEL_EVENT: {}}, f"{where}: events {claims}"
        assert "nonce" not in claims, f"{where}: a logout token must not carry a nonce"
        identity = (claims.get("sid"), claims.get("sub"))
        assert identity in identities, f"{where}: (sid, sub) {identity} not in {identities}"
        tokens.append(LogoutToken(raw, header, claims, request))
    return tokens


def assert_fresh_jtis(tokens: Sequence[LogoutToken]) -> None:
    """No two requests (retries included) ever carry the same ``jti``."""
    jtis = Counter(token.claims["jti"] for token in tokens)
    reused = {jti: n for jti, n in jtis.items() if n > 1}
    assert not reused, f"jti reused: {reused}"


# -- the stack --------------------------------------------------------------------------


def oidc_provider(name: str, rp: RelyingParty | str, **settings: Any) -> dict[str, Any]:
    """An OIDC back-channel client named ``name`` whose client_id is ``client-<name>``."""
    url = rp if isinstance(rp, str) else rp.url
    return {
        "name": name,
        "protocol": "oidc",
        "client_id": f"client-{name}",
        "backchannel_logout_uri": url,
        "allow_http": True,
        **settings,
    }


def start(
    stack: Stack,
    providers: Sequence[Mapping[str, Any]],
    records: Sequence[Mapping[str, Any]],
    env: Mapping[str, str] | None = None,
) -> Jwks:
    """Print the JWKS (CLI), load the providers and sessions, then start one worker.

    ``keys jwks`` runs before the worker with the same data dir and key settings, so the
    key it makes (when none is configured) is the one the worker signs with.
    """
    stack.protocols = ["oidc"]
    env = {**OIDC_ENV, **(env or {})}
    jwks = cli(stack, ["keys", "jwks"], env)
    stack.seed(providers=providers, records=records)
    document = output(jwks)
    stack.start_worker({**DELIVERY_SETTINGS, **env})
    return parse_jwks(document)


def link_record(
    session_id: str, provider: str, *, sid: str | None, sub: str | None
) -> dict[str, Any]:
    """A provider session for ``sessions import``; ``None`` leaves an identifier out."""
    record: dict[str, Any] = {
        "kind": "provider_session",
        "session_id": session_id,
        "provider": provider,
    }
    if sid is not None:
        record["sid"] = sid
    if sub is not None:
        record["sub"] = sub
    return record


# -- the tests --------------------------------------------------------------------------


def test_response_classes(stack: Stack, rps: RelyingParties) -> None:
    """Every answer class ends in the right outcome, with verified fresh tokens and clean audit."""
    busy = Reply(429, {"Retry-After": "1"})
    target = rps("target")
    parties = {
        "ok": rps("ok", Reply(200)),
        "nocontent": rps("nocontent", Reply(204)),
        "bad": rps("bad", Reply(400)),
        "busy": rps("busy", busy, Reply(200)),
        "flaky": rps("flaky", Reply(503), Reply(200)),
        "hang": rps("hang", Reply(200, hang=5)),
        "redirect": rps("redirect", Reply(302, {"Location": target.url})),
    }
    urls: dict[str, RelyingParty | str] = {**parties}
    urls["closed"] = f"http://127.0.0.1:{closed_port()}/backchannel-logout"
    jwks = start(
        stack,
        [oidc_provider(f"rp-{name}", url) for name, url in urls.items()],
        [
            session_record("s-classes", "alice"),
            *(
                link_record("s-classes", f"rp-{name}", sid=f"sid-{name}", sub="alice-sub")
                for name in urls
            ),
        ],
    )
    assert len(jwks.kids) == 1, jwks.document
    (kid,) = jwks.kids
    logout = logout_event("s-classes")
    event_id = logout["event_id"]
    publish(stack, logout)
    wait_settled(stack, event_id, len(urls), timeout=45)

    found = {d.provider.removeprefix("rp-"): d for d in deliveries(stack, event_id)}
    outcome = {name: (d.status, d.attempts, d.last_status_code) for name, d in found.items()}
    assert outcome == {
        "ok": ("succeeded", 1, 200),
        "nocontent": ("succeeded", 1, 204),
        "bad": ("failed", 1, 400),
        "busy": ("succeeded", 2, 200),
        "flaky": ("succeeded", 2, 200),
        "hang": ("failed", 3, None),
        "closed": ("failed", 3, None),
        "redirect": ("failed", 1, 302),
    }, outcome
    hang_error = found["hang"].last_error or ""
    assert "no answer within 1 s" in hang_error, hang_error
    assert "3 attempts" in hang_error, hang_error
    closed_error = found["closed"].last_error or ""
    assert "connection failed" in closed_error, closed_error
    assert "3 attempts" in closed_error, closed_error

    counts = {name: len(rp.requests()) for name, rp in parties.items()}
    assert counts == {
        "ok": 1,
        "nocontent": 1,
        "bad": 1,  # the RP rejected it: never resent
        "busy": 2,
        "flaky": 2,
        "hang": 3,
        "redirect": 1,
    }, counts
    assert target.requests() == [], "the worker followed a redirect"

    tokens: list[LogoutToken] = []
    for name, rp in parties.items():
        tokens += verify(
            rp,
            jwks,
            client_id=f"client-rp-{name}",
            kid=kid,
            identities=[(f"sid-{name}", "alice-sub")],
        )
    assert len(tokens) == sum(counts.values())
    assert_fresh_jtis(tokens)

    (first_answer, status), *_ = parties["busy"].answers()
    assert status == 429
    retried = parties["busy"].requests()[1].at
    assert retried - first_answer >= 1.0, (
        f"Retry-After: 1 not honoured: retried {retried - first_answer:.3f} s after the 429"
    )

    # The audit trail: one delivery.retrying per transient attempt, one final record each.
    retrying = audit_rows(stack, event_id, "delivery.retrying")
    retried_attempts = sorted(
        ((row.provider or "").removeprefix("rp-"), row.detail["attempt"]) for row in retrying
    )
    assert retried_attempts == [
        ("busy", 1),
        ("closed", 1),
        ("closed", 2),
        ("flaky", 1),
        ("hang", 1),
        ("hang", 2),
    ], retried_attempts
    errors = {(row.provider or "", row.detail["attempt"]): row.detail["error"] for row in retrying}
    assert "429" in errors["rp-busy", 1], errors
    assert "503" in errors["rp-flaky", 1], errors
    assert all("no answer" in errors["rp-hang", n] for n in (1, 2)), errors
    busy_retry = next(row for row in retrying if row.provider == "rp-busy")
    assert busy_retry.detail.get("retry_after") == 1.0, busy_retry.detail
    finals: dict[str, list[tuple[str, int]]] = {}
    for kind in ("delivery.succeeded", "delivery.failed", "delivery.skipped"):
        for row in audit_rows(stack, event_id, kind):
            name = (row.provider or "").removeprefix("rp-")
            finals.setdefault(name, []).append((kind, row.detail["attempt"]))
    assert finals == {
        "ok": [("delivery.succeeded", 1)],
        "nocontent": [("delivery.succeeded", 1)],
        "bad": [("delivery.failed", 1)],
        "busy": [("delivery.succeeded", 2)],
        "flaky": [("delivery.succeeded", 2)],
        "hang": [("delivery.failed", 3)],
        "closed": [("delivery.failed", 3)],
        "redirect": [("delivery.failed", 1)],
    }, finals

    # No token in the audit trail (all of it, as the CLI lists it) or the worker's logs.
    listed = stack.cli("audit", "list", "--json", "--limit", "100000")
    assert listed.returncode == 0, listed.stderr
    records = [json.loads(line) for line in listed.stdout.splitlines() if line.strip()]
    assert len(records) >= len(retrying) + len(urls)
    for record in records:
        assert "eyJ" not in json.dumps(record), f"a token in the audit trail: {record}"
    logs = "".join(worker.output() for worker in stack.workers)
    leaked = [token.claims["jti"] for token in tokens if token.raw in logs]
    assert not leaked, f"logout tokens written to the worker's log (jti {leaked})"
    assert sorted(p.name for p in (stack.data_dir / "oidc-keys").glob("*.pem")) == [f"{kid}.pem"]


def test_one_token_per_session(stack: Stack, rps: RelyingParties) -> None:
    """Revoking a user's 3 sessions at one RP sends 3 tokens, one per sid, never one for all."""
    rp = rps("multi")
    jwks = start(
        stack,
        [oidc_provider("rp-multi", rp)],
        [
            *(session_record(f"s-carol-{n}", "carol") for n in (1, 2, 3)),
            session_record("s-bob", "bob"),
            *(
                link_record(f"s-carol-{n}", "rp-multi", sid=f"sid-carol-{n}", sub="carol-sub")
                for n in (1, 2, 3)
            ),
            link_record("s-bob", "rp-multi", sid="sid-bob", sub="bob-sub"),
        ],
    )
    revoke = event("user.revoke_all", user_id="carol", initiator="admin", actor="admin-1")
    publish(stack, revoke)
    wait_settled(stack, revoke["event_id"], 3)

    tokens = verify(
        rp,
        jwks,
        client_id="client-rp-multi",
        kid=jwks.kids[0],
        identities=[(f"sid-carol-{n}", "carol-sub") for n in (1, 2, 3)],
    )
    sids = Counter(token.claims["sid"] for token in tokens)
    assert sids == Counter({f"sid-carol-{n}": 1 for n in (1, 2, 3)}), sids
    assert_fresh_jtis(tokens)
    assert {d.status for d in deliveries(stack)} == {"succeeded"}
    with stack.db() as db:
        bob = db.get(IdpSession, "s-bob")
        assert bob is not None
        assert bob.ended_at is None, "another user's session was ended"


def test_rp_initiated_logout(stack: Stack, rps: RelyingParties) -> None:
    """An RP-initiated logout notifies only that RP, or every RP with ``full_logout``."""
    rp_a, rp_b = rps("a"), rps("b")
    jwks = start(
        stack,
        [oidc_provider("rp-a", rp_a), oidc_provider("rp-b", rp_b)],
        [
            session_record("s-part", "erin"),
            session_record("s-full", "erin"),
            link_record("s-part", "rp-a", sid="sid-a-part", sub="erin-sub"),
            link_record("s-part", "rp-b", sid="sid-b-part", sub="erin-sub"),
            link_record("s-full", "rp-a", sid="sid-a-full", sub="erin-sub"),
            link_record("s-full", "rp-b", sid="sid-b-full", sub="erin-sub"),
        ],
    )
    kid = jwks.kids[0]
    partial = event("logout.provider", session_id="s-part", provider="rp-a", full_logout=False)
    publish(stack, partial)
    wait_settled(stack, partial["event_id"], 1)

    tokens = verify(
        rp_a, jwks, client_id="client-rp-a", kid=kid, identities=[("sid-a-part", "erin-sub")]
    )
    assert len(tokens) == 1, "the RP that started the logout was not notified exactly once"
    assert rp_b.requests() == [], "full_logout=false, yet another RP was notified"
    assert [d.provider for d in deliveries(stack, partial["event_id"])] == ["rp-a"]
    with stack.db() as db:
        session = db.get(IdpSession, "s-part")
        assert session is not None
        assert session.ended_at is None, "full_logout=false, yet the IdP session was ended"
        links = {
            p.provider: p.ended_at
            for p in db.scalars(
                select(ProviderSession).where(ProviderSession.session_id == "s-part")
            )
        }
    assert links["rp-a"] is not None, links
    assert links["rp-b"] is None, links

    full = event("logout.provider", session_id="s-full", provider="rp-a", full_logout=True)
    publish(stack, full)
    wait_settled(stack, full["event_id"], 2)
    tokens_a = verify(
        rp_a,
        jwks,
        client_id="client-rp-a",
        kid=kid,
        identities=[("sid-a-part", "erin-sub"), ("sid-a-full", "erin-sub")],
    )
    tokens_b = verify(
        rp_b, jwks, client_id="client-rp-b", kid=kid, identities=[("sid-b-full", "erin-sub")]
    )
    assert [t.claims["sid"] for t in tokens_a] == ["sid-a-part", "sid-a-full"]
    assert [t.claims["sid"] for t in tokens_b] == ["sid-b-full"]
    assert_fresh_jtis(tokens_a + tokens_b)
    assert {d.status for d in deliveries(stack)} == {"succeeded"}
    with stack.db() as db:
        session = db.get(IdpSession, "s-full")
        assert session is not None
        assert session.ended_at is not None, "full_logout=true, yet the IdP session stayed open"
        assert session.ended_by_event == full["event_id"]


def test_session_required_without_sid(stack: Stack, rps: RelyingParties) -> None:
    """A client requiring ``sid`` gets nothing for a session without one: a permanent failure.

    ``sessions import`` refuses such a provider session now; this one was stored unchecked,
    as imports stored them before (the handler still refuses to build the token).
    """
    strict, lenient = rps("strict"), rps("lenient")
    jwks = start(
        stack,
        [
            oidc_provider("rp-strict", strict, backchannel_logout_session_required=True),
            oidc_provider("rp-lenient", lenient),
        ],
        [
            session_record("s-nosid", "dave"),
            link_record("s-nosid", "rp-lenient", sid=None, sub="dave-sub"),
        ],
    )
    stack.seed(records=[link_record("s-nosid", "rp-strict", sid=None, sub="dave-sub")])
    logout = logout_event("s-nosid")
    publish(stack, logout)
    wait_settled(stack, logout["event_id"], 2)

    found = {d.provider: d for d in deliveries(stack)}
    failed = found["rp-strict"]
    assert (failed.status, failed.attempts, failed.last_status_code) == ("failed", 1, None)
    error = failed.last_error or ""
    assert "backchannel_logout_session_required" in error, error
    assert "sid" in error, error
    assert strict.requests() == [], "a token without sid was sent to a client requiring sid"
    assert audit_rows(stack, logout["event_id"], "delivery.retrying") == []
    (record,) = [
        row
        for row in audit_rows(stack, logout["event_id"], "delivery.failed")
        if row.provider == "rp-strict"
    ]
    assert record.detail["error"] == failed.last_error

    # Without the requirement, a token naming only the subject is sent (all its sessions).
    assert found["rp-lenient"].status == "succeeded"
    (token,) = verify(
        lenient,
        jwks,
        client_id="client-rp-lenient",
        kid=jwks.kids[0],
        identities=[(None, "dave-sub")],
    )
    assert "sid" not in token.claims


def test_key_rotation(stack: Stack, rps: RelyingParties, tmp_path: Path) -> None:
    """With two configured keys, tokens carry the active ES256 kid and verify via the JWKS."""
    keys_dir = tmp_path / "keys"
    commands = [
        cli(stack, ["keys", "generate", "--dir", str(keys_dir), "--alg", alg], OIDC_ENV)
        for alg in ("RS256", "ES256")
    ]
    generated = [output(command) for command in commands]
    kids: dict[str, str] = {}
    for printed in generated:
        match = _GENERATED.search(printed)
        assert match is not None, printed
        kids[match.group(2)] = match.group(1)
    files = [keys_dir / f"{kids[alg]}.pem" for alg in ("RS256", "ES256")]  # RS256 first
    assert all(path.is_file() for path in files), files
    rp = rps("rotated")
    jwks = start(
        stack,
        [oidc_provider("rp-rotated", rp)],
        [
            session_record("s-rot", "frank"),
            link_record("s-rot", "rp-rotated", sid="sid-rot", sub="frank-sub"),
        ],
        {
            "LOGOUT_OIDC_KEY_FILES": json.dumps([str(path) for path in files]),
            "LOGOUT_OIDC_ACTIVE_KID": kids["ES256"],
        },
    )
    assert sorted(jwks.kids) == sorted(kids.values()), jwks.document
    assert {jwks.alg(kid): kid for kid in jwks.kids} == kids
    logout = logout_event("s-rot")
    publish(stack, logout)
    wait_settled(stack, logout["event_id"], 1)

    (token,) = verify(
        rp,
        jwks,
        client_id="client-rp-rotated",
        kid=kids["ES256"],
        identities=[("sid-rot", "frank-sub")],
    )
    assert token.header["alg"] == "ES256", token.header
    assert deliveries(stack)[0].status == "succeeded"
    generated_keys = list((stack.data_dir / "oidc-keys").glob("*.pem"))
    assert generated_keys == [], "a key was generated although keys are configured"


def test_republished_event_sends_nothing_again(stack: Stack, rps: RelyingParties) -> None:
    """The same event redelivered or re-published sends no second token to any RP."""
    rp_a, rp_b = rps("a"), rps("b")
    jwks = start(
        stack,
        [oidc_provider("rp-a", rp_a), oidc_provider("rp-b", rp_b)],
        [
            session_record("s-dup", "gina"),
            link_record("s-dup", "rp-a", sid="sid-a", sub="gina-sub"),
            link_record("s-dup", "rp-b", sid="sid-b", sub="gina-sub"),
        ],
    )
    logout = logout_event("s-dup")
    event_id = logout["event_id"]
    # The first message gets a known id, so the broker's redelivery of it can be replayed.
    message_id = str(uuid.uuid4())
    message = event_message(parse_event(logout, "event"), stack.namespace, message_id)
    with stack.raw_sender() as send:
        send(message)
    wait_settled(stack, event_id, 2)
    stack.wait_for(lambda: stack.unacked("events") == 0, what="the event to be acknowledged")
    before = {rp.name: len(rp.requests()) for rp in (rp_a, rp_b)}
    assert before == {"a": 1, "b": 1}, before

    with stack.raw_sender() as send:
        send(message)  # redelivered as it was
    with stack.publisher() as publisher:
        publisher.publish(logout)  # published again: a new message, the same event_id

    def duplicates() -> int:
        return len(audit_rows(stack, event_id, "event.duplicate"))

    stack.wait_for(lambda: duplicates() == 2, what="two event.duplicate records", timeout=30)
    stack.wait_for(
        lambda: stack.unacked("events") == 0 and stack.queue_length("events") == 0,
        what="the duplicates to be acknowledged",
    )
    time.sleep(0.5)  # room for a wrongly scheduled delivery to arrive
    after = {rp.name: len(rp.requests()) for rp in (rp_a, rp_b)}
    assert after == before, f"a duplicate event sent tokens again: {after}"
    tokens = verify(
        rp_a, jwks, client_id="client-rp-a", kid=jwks.kids[0], identities=[("sid-a", "gina-sub")]
    ) + verify(
        rp_b, jwks, client_id="client-rp-b", kid=jwks.kids[0], identities=[("sid-b", "gina-sub")]
    )
    assert_fresh_jtis(tokens)
    with stack.db() as db:
        assert db.scalar(select(func.count()).select_from(Delivery)) == 2
        assert db.scalar(select(func.count()).select_from(EventRecord)) == 1
    assert all(d.attempts == 1 for d in deliveries(stack))


def test_key_files_as_a_comma_separated_variable(stack: Stack, tmp_path: Path) -> None:
    """``LOGOUT_OIDC_KEY_FILES`` takes one path, or several separated by commas."""
    first, second = (generate_key(tmp_path / "keys", alg) for alg in ("ES256", "RS256"))
    one, both = (
        cli(stack, ["keys", "jwks"], {**OIDC_ENV, "LOGOUT_OIDC_KEY_FILES": value})
        for value in (first.source, f"{first.source},{second.source}")
    )
    assert parse_jwks(output(one)).kids == [first.kid]
    assert parse_jwks(output(both)).kids == [first.kid, second.kid]
