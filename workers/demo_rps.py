"""Sample relying parties for the demo: a loopback HTTP server that verifies logout tokens.

``/wiki`` and ``/chat`` accept (200 and 204), ``/crm`` rejects with 400 (a permanent
failure), ``/mail`` answers 503 once and then 200 (a retry). ``/payroll`` is a SAML SP on
the SOAP binding: it checks the LogoutRequest's signature against the IdP's certificate and
answers with a LogoutResponse (``Success``) signed with its own key.

The fault campaign (``tests/faults``) runs them too, slowed down by ``delay``, and counts
what :attr:`DemoRelyingParties.received` names (each token's ``sid``, each request's
``SessionIndex``).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jwt
import xmlsec
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from protocols.saml import (
    MessageError,
    Trust,
    logout_response,
    parse_xml,
    self_signed,
    soap_body,
    soap_envelope,
    verify_enveloped,
)
from protocols.saml.uris import ASSERTION_NS, PROTOCOL_NS

__all__ = ["DemoRelyingParties", "DemoServiceProvider", "Received"]

_STATUS = {"wiki": 200, "chat": 204, "crm": 400, "mail": 200}


@dataclass(frozen=True, slots=True)
class Received:
    rp: str
    status: int
    claims: dict[str, Any] | None
    error: str | None


class DemoServiceProvider:
    """The SAML SP "payroll": its own key and self-signed certificate, the IdP's to verify."""

    entity_id = "https://payroll.example.com/sp"

    def __init__(self, folder: Path, idp_certificate: x509.Certificate) -> None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        certificate = self_signed(key, datetime.now(UTC)).public_bytes(serialization.Encoding.PEM)
        folder.mkdir(parents=True, exist_ok=True)
        #: The SP's certificate, named by ``sp_certificate`` in the demo's providers file.
        self.certificate_path = folder / "payroll-sp-cert.pem"
        self.certificate_path.write_bytes(certificate)
        private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        self._key = xmlsec.Key.from_memory(private, xmlsec.constants.KeyDataFormatPem)
        self._key.load_cert_from_memory(certificate, xmlsec.constants.KeyDataFormatCertPem)
        self._idp = Trust.of([idp_certificate])

    def answer(self, body: bytes) -> tuple[Received, bytes]:
        """Check a SOAP LogoutRequest; answer with a signed SOAP LogoutResponse."""
        try:
            request = soap_body(parse_xml(body, limit=64 * 1024))
            verify_enveloped(request, self._idp)
        except MessageError as exc:
            return Received("payroll", 400, None, f"invalid LogoutRequest: {exc}"), b""
        facts = {
            "name_id": request.findtext(f"{{{ASSERTION_NS}}}NameID"),
            "session_index": request.findtext(f"{{{PROTOCOL_NS}}}SessionIndex"),
            "reason": (request.get("Reason") or "").rsplit(":", 1)[-1],
        }
        response = logout_response(
            issuer=self.entity_id,
            destination=None,
            in_response_to=request.get("ID") or "",
            partial=False,
            now=datetime.now(UTC),
            key=self._key,
        )
        return Received("payroll", 200, facts, None), soap_envelope(response)


class _Server(ThreadingHTTPServer):
    # Workers open dozens of connections at once; the default backlog of 5 would drop
    # connection attempts, and each dropped one costs the client a second.
    request_queue_size = 128


class DemoRelyingParties:
    """Start with :meth:`start`, read :attr:`received`, stop with :meth:`stop`."""

    def __init__(
        self,
        jwks: dict[str, Any],
        issuer: str,
        saml: DemoServiceProvider | None = None,
        *,
        delay: float = 0.0,
        port: int = 0,
    ) -> None:
        """``delay``: seconds each answer is held back once the request is read (a slow
        relying party); ``port``: where to listen on 127.0.0.1 (0: any free port)."""
        self._keys = {key["kid"]: jwt.PyJWK(key) for key in jwks["keys"]}
        self._issuer = issuer
        self._saml = saml
        self._delay = delay
        self.received: list[Received] = []
        self._failed_once: set[str] = set()
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", port), self._handler())
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
                body = self.rfile.read(length)
                answer = b""
                if rp == "payroll" and parties._saml is not None:
                    received, answer = parties._saml.answer(body)
                else:
                    tokens = parse_qs(body.decode()).get("logout_token")
                    received = parties._answer(rp, tokens[0] if tokens else None)
                with parties._lock:
                    parties.received.append(received)
                if parties._delay > 0:
                    time.sleep(parties._delay)
                try:
                    self.send_response(received.status)
                    if answer:
                        self.send_header("content-type", "text/xml; charset=utf-8")
                    self.send_header("content-length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                except OSError:
                    pass  # the client stopped waiting (its timeout): nothing to answer

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler
