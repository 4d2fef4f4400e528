"""Sample relying parties for the demo: a loopback HTTP server that verifies logout tokens.

``/wiki`` and ``/chat`` accept (200 and 204), ``/crm`` rejects with 400 (a permanent
failure), ``/mail`` answers 503 once and then 200 (a retry).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import jwt

__all__ = ["DemoRelyingParties", "Received"]

_STATUS = {"wiki": 200, "chat": 204, "crm": 400, "mail": 200}


@dataclass(frozen=True, slots=True)
class Received:
    rp: str
    status: int
    claims: dict[str, Any] | None
    error: str | None


class DemoRelyingParties:
    """Start with :meth:`start`, read :attr:`received`, stop with :meth:`stop`."""

    def __init__(self, jwks: dict[str, Any], issuer: str) -> None:
        self._keys = {key["kid"]: jwt.PyJWK(key) for key in jwks["keys"]}
        self._issuer = issuer
        self.received: list[Received] = []
        self._failed_once: set[str] = set()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> DemoRelyingParties:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _verify(self, rp: str, token: str) -> dict[str, Any]:
        header = jwt.get_unverified_header(token)
        if header.get("typ") != "logout+jwt":
            raise jwt.InvalidTokenError("typ is not logout+jwt")
        key = self._keys[header["kid"]]
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=["RS256", "ES256"],
            audience=rp,
            issuer=self._issuer,
            options={"require": ["iss", "aud", "iat", "exp", "jti", "events"]},
        )
        if "nonce" in claims:
            raise jwt.InvalidTokenError("a logout token must not carry a nonce")
        return claims

    def _answer(self, rp: str, token: str | None) -> Received:
        if token is None:
            return Received(rp, 400, None, "no logout_token")
        try:
            claims = self._verify(rp, token)
        except (jwt.InvalidTokenError, KeyError) as exc:
            return Received(rp, 400, None, f"invalid token: {exc}")
        with self._lock:
            if rp == "mail" and rp not in self._failed_once:
                self._failed_once.add(rp)
                return Received(rp, 503, claims, "busy (first try)")
        if rp == "crm":
            return Received(rp, 400, claims, "crm refuses every logout")
        return Received(rp, _STATUS.get(rp, 404), claims, None)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        parties = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                rp = self.path.strip("/").split("/")[0]
                length = int(self.headers.get("content-length") or 0)
                form = parse_qs(self.rfile.read(length).decode())
                tokens = form.get("logout_token")
                received = parties._answer(rp, tokens[0] if tokens else None)
                with parties._lock:
                    parties.received.append(received)
                self.send_response(received.status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler
