"""A Shared Signals receiver on 127.0.0.1 that judges every SET pushed to it (RFC 8935) with
joserfc, a JOSE implementation independent of the one that signed: the signature against the
transmitter's JWKS fetched over HTTP, the ``typ`` header, the claims SSF and CAEP require and
the subject identifier format its stream asked for. It answers each push from a script (202,
a 400 with an RFC 8935 error, a 503), the last answer repeating."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import httpx
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry

from .support import LoopbackServer

__all__ = ["Answer", "Judged", "Receiver"]

SESSION_REVOKED = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"
VERIFICATION = "https://schemas.openid.net/secevent/ssf/event-type/verification"
_SUBJECT_MEMBERS = {
    "iss_sub": {"format", "iss", "sub"},
    "email": {"format", "email"},
    "opaque": {"format", "id"},
    "complex": {"format", "user", "session"},
}
_ENTITIES = {"user", "admin", "policy", "system"}


@dataclass(frozen=True)
class Answer:
    """What the receiver answers one push with."""

    status: int = 202
    body: dict[str, str] | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Judged:
    """One push as received: the verified header and claims, and every problem found."""

    content_type: str
    accept: str
    authorization: str
    header: dict[str, Any]
    claims: dict[str, Any]
    problems: list[str]


class Receiver(LoopbackServer):
    """The receiver of one stream: expects ``issuer``, ``aud`` and subjects of ``fmt``."""

    def __init__(self, jwks_url: str, issuer: str, aud: str, fmt: str, *script: Answer) -> None:
        super().__init__(_Push)
        self.jwks_url = jwks_url
        self.issuer = issuer
        self.aud = aud
        self.fmt = fmt
        self.script = list(script) or [Answer()]
        self.judged: list[Judged] = []

    @property
    def url(self) -> str:
        return f"{self.base_url}/ssf/push"

    def pushes(self) -> list[Judged]:
        with self.lock:
            return list(self.judged)

    def keys(self) -> KeySet:
        """The transmitter's JWKS, fetched over HTTP as a receiver does (public keys only)."""
        document = httpx.get(self.jwks_url, timeout=10).raise_for_status().json()
        for key in document["keys"]:
            assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key), "a private key member"
        return KeySet.import_key_set(document)

    def judge(self, token: str) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
        try:
            decoded = jwt.decode(token, self.keys(), algorithms=["RS256", "ES256"])
        except (JoseError, ValueError) as exc:
            return {}, {}, [f"signature: {type(exc).__name__}"]
        header, claims = dict(decoded.header), dict(decoded.claims)
        problems: list[str] = []
        if header.get("typ") != "secevent+jwt":
            problems.append(f"typ is {header.get('typ')!r}")
        if not header.get("kid"):
            problems.append("no kid")
        registry = JWTClaimsRegistry(
            iss={"essential": True, "value": self.issuer},
            aud={"essential": True, "value": self.aud},
            iat={"essential": True},
            jti={"essential": True},
        )
        try:
            registry.validate(claims)
        except JoseError as exc:
            problems.append(f"claims: {exc}")
        problems += self._events(claims)
        return header, claims, problems

    def _events(self, claims: dict[str, Any]) -> list[str]:
        events = claims.get("events")
        if not isinstance(events, dict) or len(events) != 1:
            return ["events must hold one event"]
        [(uri, event)] = events.items()
        if "sub" in claims:
            return ["a SET names its subject in sub_id, not sub"]
        if uri == VERIFICATION:
            ok = claims.get("sub_id", {}).get("format") == "opaque"
            return [] if ok else ["a verification names the stream (opaque)"]
        if uri != SESSION_REVOKED:
            return [f"unexpected event {uri}"]
        problems = self._subject(claims.get("sub_id"))
        if not isinstance(claims.get("txn"), str):
            problems.append("no txn")
        if not isinstance(event.get("event_timestamp"), int):
            problems.append("no event_timestamp")
        if event.get("initiating_entity") not in _ENTITIES:
            problems.append(f"initiating_entity {event.get('initiating_entity')!r}")
        reason = event.get("reason_admin")
        if not isinstance(reason, dict) or not isinstance(reason.get("en"), str):
            problems.append("reason_admin is no language-tagged text")
        return problems

    def _subject(self, sub_id: Any) -> list[str]:
        if not isinstance(sub_id, dict) or sub_id.get("format") != self.fmt:
            return [f"sub_id is not of format {self.fmt}: {sub_id!r}"]
        if set(sub_id) != _SUBJECT_MEMBERS[self.fmt]:
            return [f"sub_id members {sorted(sub_id)}"]
        if self.fmt == "complex":
            user, session = sub_id["user"], sub_id["session"]
            if set(user) != _SUBJECT_MEMBERS.get(user.get("format"), set()):
                return [f"complex user {user!r}"]
            if set(session) != _SUBJECT_MEMBERS.get(session.get("format"), set()):
                return [f"complex session {session!r}"]
        if sub_id.get("format") == "iss_sub" and sub_id["iss"] != self.issuer:
            return ["iss_sub names another issuer"]
        return []


class _Push(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        header, claims, problems = self.server.judge(body.decode())
        judged = Judged(
            content_type=self.headers.get("Content-Type", ""),
            accept=self.headers.get("Accept", ""),
            authorization=self.headers.get("Authorization", ""),
            header=header,
            claims=claims,
            problems=problems,
        )
        with self.server.lock:
            self.server.judged.append(judged)
            number = len(self.server.judged)
        answer = self.server.script[min(number, len(self.server.script)) - 1]
        reply = b"" if answer.body is None else json.dumps(answer.body).encode()
        self.send_response(answer.status)
        if reply:
            self.send_header("Content-Type", "application/json")
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: object) -> None:
        pass
