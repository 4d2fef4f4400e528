"""SAML Single Logout over SOAP end to end: a real worker signs LogoutRequests and sends them
to real SOAP service providers on 127.0.0.1. Each SP checks every request as an SP built with
another implementation would (the xmlsec1 command for the signature, python3-saml for the
message), and answers with a LogoutResponse built and signed by python3-saml, or with
something worse. The IdP's certificate comes from ``logout-orchestrator saml metadata``."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from onelogin.saml2.constants import OneLogin_Saml2_Constants
from onelogin.saml2.idp_metadata_parser import OneLogin_Saml2_IdPMetadataParser
from onelogin.saml2.logout_request import OneLogin_Saml2_Logout_Request
from onelogin.saml2.settings import OneLogin_Saml2_Settings
from onelogin.saml2.utils import OneLogin_Saml2_Utils

from tests.saml_support import (
    EMAIL_FORMAT,
    LOGOUT_REQUEST,
    SP_ENTITY,
    KeyPair,
    make_pair,
    onelogin_settings,
    soap,
    sp_logout_response,
    xmlsec1_verify,
)

from .support import (
    LoopbackServer,
    LoopbackServers,
    Stack,
    audit_rows,
    cli,
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
SAML_ENV: Mapping[str, str] = {"LOGOUT_PROTOCOLS": "saml", "LOGOUT_ISSUER": ISSUER}
# Retry fast, give up after three attempts, and call one second without an answer a timeout.
DELIVERY_SETTINGS: Mapping[str, str] = {
    "LOGOUT_DELIVERY_TIMEOUT": "1",
    "LOGOUT_RETRY_INITIAL_DELAY": "0.2",
    "LOGOUT_RETRY_MAX_DELAY": "2",
    "LOGOUT_DELIVERY_MAX_ATTEMPTS": "3",
}
P = "{urn:oasis:names:tc:SAML:2.0:protocol}"
A = "{urn:oasis:names:tc:SAML:2.0:assertion}"
SUCCESS = OneLogin_Saml2_Constants.STATUS_SUCCESS
REQUESTER = OneLogin_Saml2_Constants.STATUS_REQUESTER
RESPONDER = OneLogin_Saml2_Constants.STATUS_RESPONDER
PARTIAL_LOGOUT = "urn:oasis:names:tc:SAML:2.0:status:PartialLogout"
RSA_SHA1 = "http://www.w3.org/2000/09/xmldsig#rsa-sha1"
SHA1 = "http://www.w3.org/2000/09/xmldsig#sha1"

BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/">
<SOAP-ENV:Body>&lol3;</SOAP-ENV:Body></SOAP-ENV:Envelope>"""


@dataclass(frozen=True, slots=True)
class Checked:
    """One LogoutRequest as the SP received and checked it."""

    soap_action: str | None
    content_type: str | None
    request_id: str
    name_id: str | None
    name_id_format: str | None
    session_indexes: list[str]
    reason: str | None
    signature_ok: bool
    python3_saml_error: str | None
    at: float


#: How an SP answers one request: (HTTP status, body, seconds of silence first), from the
#: request's ID and the SP's python3-saml settings and key pair.
Answer = Callable[[str, OneLogin_Saml2_Settings, KeyPair], tuple[int, bytes, float]]


def signed(status: str = SUCCESS, in_response_to: str | None = None) -> Answer:
    """A LogoutResponse with ``status``, signed by the SP (python3-saml)."""

    def answer(
        rid: str, settings: OneLogin_Saml2_Settings, pair: KeyPair
    ) -> tuple[int, bytes, float]:
        body = sp_logout_response(settings, in_response_to or rid, status=status, signer=pair)
        return 200, soap(body), 0.0

    return answer


def unsigned(
    rid: str, settings: OneLogin_Saml2_Settings, pair: KeyPair
) -> tuple[int, bytes, float]:
    """A Success response without a signature."""
    return 200, soap(sp_logout_response(settings, rid)), 0.0


def signed_by(other: KeyPair) -> Answer:
    """A Success response signed with a key that is not the SP's."""

    def answer(
        rid: str, settings: OneLogin_Saml2_Settings, pair: KeyPair
    ) -> tuple[int, bytes, float]:
        return 200, soap(sp_logout_response(settings, rid, signer=other)), 0.0

    return answer


def signed_sha1(
    rid: str, settings: OneLogin_Saml2_Settings, pair: KeyPair
) -> tuple[int, bytes, float]:
    """A Success response signed RSA-SHA1 with a SHA-1 digest (pysaml2's default)."""
    body = sp_logout_response(
        settings, rid, signer=pair, sign_algorithm=RSA_SHA1, digest_algorithm=SHA1
    )
    return 200, soap(body), 0.0


def no_session(
    rid: str, settings: OneLogin_Saml2_Settings, pair: KeyPair
) -> tuple[int, bytes, float]:
    """Shibboleth SP's signed answer when it holds no session for the NameID."""
    body = sp_logout_response(
        settings,
        rid,
        status=OneLogin_Saml2_Constants.STATUS_RESPONDER,
        substatus=PARTIAL_LOGOUT,
        status_message="Logout failed: no active session",
        signer=pair,
    )
    return 200, soap(body), 0.0


def bomb(rid: str, settings: OneLogin_Saml2_Settings, pair: KeyPair) -> tuple[int, bytes, float]:
    """An entity-expansion bomb in a DTD."""
    return 200, BOMB, 0.0


def hang(rid: str, settings: OneLogin_Saml2_Settings, pair: KeyPair) -> tuple[int, bytes, float]:
    """No answer for 3 s (the worker gives up after 1 s)."""
    return 200, b"", 3.0


def busy(rid: str, settings: OneLogin_Saml2_Settings, pair: KeyPair) -> tuple[int, bytes, float]:
    """503: come back later."""
    return 503, b"", 0.0


class ServiceProvider(LoopbackServer):
    """A SAML SP's SOAP Single Logout endpoint; answers its n-th request with ``script[n-1]``
    (the last repeats) after checking the request."""

    def __init__(self, name: str, folder: Path, idp_cert: Path, script: Sequence[Answer]) -> None:
        super().__init__(_Endpoint)
        self.name = name
        self.folder = folder / name
        self.folder.mkdir(parents=True)
        self.pair = make_pair(self.folder, "sp")
        self.idp_cert = idp_cert
        self.script = list(script)
        self.checked: list[Checked] = []
        #: Requests received so far (``checked`` grows only once a request is checked).
        self.received = 0
        self.settings = onelogin_settings(idp_cert.read_text(), self.url, want_signed=False)

    @property
    def url(self) -> str:
        return f"{self.base_url}/saml/sls"

    def check(self, body: bytes, headers: Message) -> Checked:
        """What an SP verifies: xmlsec1 for the signature, python3-saml for the message."""
        (request,) = etree.fromstring(body).iter(f"{P}LogoutRequest")
        with self.lock:  # requests arrive concurrently: each its own folder
            self.received += 1
            workdir = self.folder / f"request-{self.received}"
        workdir.mkdir()
        signature_ok, _ = xmlsec1_verify(body, self.idp_cert, LOGOUT_REQUEST, workdir)
        xml = etree.tostring(request).decode()
        message = OneLogin_Saml2_Logout_Request(self.settings, OneLogin_Saml2_Utils.b64encode(xml))
        host = self.base_url.removeprefix("http://")
        request_data = {"http_host": host, "script_name": "/saml/sls", "get_data": {}}
        valid = message.is_valid(request_data)
        name_id = OneLogin_Saml2_Logout_Request.get_nameid_data(xml)
        return Checked(
            soap_action=headers.get("SOAPAction"),
            content_type=headers.get("Content-Type"),
            request_id=request.get("ID", ""),
            name_id=name_id.get("Value"),
            name_id_format=name_id.get("Format"),
            session_indexes=OneLogin_Saml2_Logout_Request.get_session_indexes(xml),
            reason=request.get("Reason"),
            signature_ok=signature_ok,
            python3_saml_error=None if valid else message.get_error(),
            at=time.monotonic(),
        )

    def requests(self) -> list[Checked]:
        with self.lock:
            return list(self.checked)


class _Endpoint(BaseHTTPRequestHandler):
    server: ServiceProvider

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        checked = self.server.check(body, self.headers)
        with self.server.lock:
            self.server.checked.append(checked)
            number = len(self.server.checked)
        answer = self.server.script[min(number, len(self.server.script)) - 1]
        status, reply, silence = answer(checked.request_id, self.server.settings, self.server.pair)
        try:
            if silence:
                self.server.release.wait(silence)
            self.send_response(status)
            self.send_header("Content-Type", "text/xml; charset=utf-8")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)
        except OSError:
            pass  # the worker gave up waiting (the timeout under test)

    def log_message(self, format: str, *args: object) -> None:
        pass


class ServiceProviders(LoopbackServers[ServiceProvider]):
    """Starts SPs for one test and stops them all afterwards."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder
        self.idp_cert: Path | None = None

    def __call__(self, name: str, *script: Answer) -> ServiceProvider:
        assert self.idp_cert is not None, "read the IdP's metadata first"
        return self.start(ServiceProvider(name, self.folder, self.idp_cert, script or [signed()]))


@pytest.fixture
def sps(tmp_path: Path) -> Iterator[ServiceProviders]:
    """A factory of real SOAP service providers, all stopped after the test."""
    providers = ServiceProviders(tmp_path / "sps")
    try:
        yield providers
    finally:
        providers.close()


def trust_idp_metadata(stack: Stack, sps: ServiceProviders) -> None:
    """Configure the SPs from ``saml metadata`` as an SP admin would (it makes the IdP's key)."""
    document = output(cli(stack, ["saml", "metadata"], SAML_ENV))
    idp = OneLogin_Saml2_IdPMetadataParser.parse(document)["idp"]
    assert idp["entityId"] == ISSUER
    body = idp["x509cert"]
    pem = "-----BEGIN CERTIFICATE-----\n" + "\n".join(
        body[i : i + 64] for i in range(0, len(body), 64)
    )
    pem += "\n-----END CERTIFICATE-----\n"
    path = sps.folder / "idp-cert.pem"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(pem)
    sps.idp_cert = path
    generated = (stack.data_dir / "saml-idp" / "cert.pem").read_text()
    assert generated.split() == pem.split(), "the metadata does not show the signing certificate"


def saml_provider(sp: ServiceProvider, **settings: Any) -> dict[str, Any]:
    """``sp`` as a SOAP provider; its certificate known and signed responses required."""
    return {
        "name": sp.name,
        "protocol": "saml",
        "entity_id": SP_ENTITY,
        "sls_url": sp.url,
        "sls_binding": "soap",
        "sp_certificate": str(sp.pair.cert_path),
        "require_signed_responses": True,
        "allow_http": True,
        **settings,
    }


def saml_link(session_id: str, provider: str, name_id: str, index: str) -> dict[str, Any]:
    """A SAML provider session: an email NameID qualified by the SP, and its SessionIndex."""
    return {
        "kind": "provider_session",
        "session_id": session_id,
        "provider": provider,
        "name_id": name_id,
        "name_id_format": EMAIL_FORMAT,
        "sp_name_qualifier": SP_ENTITY,
        "session_index": index,
    }


def start(
    stack: Stack, providers: Sequence[dict[str, Any]], records: Sequence[dict[str, Any]]
) -> None:
    """Load the providers and sessions, then start one worker (SAML only)."""
    stack.protocols = ["saml"]
    stack.seed(providers=providers, records=records)
    stack.start_worker({**DELIVERY_SETTINGS, **SAML_ENV})


def test_response_classes(stack: Stack, sps: ServiceProviders, tmp_path: Path) -> None:
    """Every class of answer ends as it must, every request passes the SP's independent
    checks, and each outcome is in the deliveries table and the audit trail with its reason."""
    trust_idp_metadata(stack, sps)
    attacker = make_pair(tmp_path, "attacker")
    parties = {
        "ok": sps("sp-ok"),
        "denied": sps("sp-denied", signed(REQUESTER)),
        "unsigned": sps("sp-unsigned", unsigned),
        "forged": sps("sp-forged", signed_by(attacker)),
        "stale": sps("sp-stale", signed(in_response_to="_an-older-request")),
        "bomb": sps("sp-bomb", bomb),
        "hang": sps("sp-hang", hang),
        "busy": sps("sp-busy", busy, signed()),
    }
    start(
        stack,
        [saml_provider(sp) for sp in parties.values()],
        [
            session_record("s-1", "alice"),
            *(
                saml_link("s-1", sp.name, "alice@example.com", f"_idx-{name}")
                for name, sp in parties.items()
            ),
        ],
    )
    logout = logout_event("s-1")
    publish(stack, logout)
    event_id = logout["event_id"]
    wait_settled(stack, event_id, len(parties), timeout=60)

    found = {d.provider.removeprefix("sp-"): d for d in deliveries(stack, event_id)}
    outcome = {name: (d.status, d.attempts, d.last_status_code) for name, d in found.items()}
    assert outcome == {
        "ok": ("succeeded", 1, 200),
        "denied": ("failed", 1, 200),
        "unsigned": ("failed", 1, 200),
        "forged": ("failed", 1, 200),
        "stale": ("failed", 1, 200),
        "bomb": ("failed", 1, 200),
        "hang": ("failed", 3, None),
        "busy": ("succeeded", 2, 200),
    }, outcome
    errors = {name: d.last_error or "" for name, d in found.items()}
    assert errors["denied"] == f"LogoutResponse status {REQUESTER}"
    assert "not signed, and require_signed_responses is set" in errors["unsigned"]
    assert "signature does not verify with the SP certificate in sp_certificate" in errors["forged"]
    assert "InResponseTo '_an-older-request' is not the request's ID" in errors["stale"]
    assert "has a DTD (DOCTYPE), which is never accepted" in errors["bomb"]
    assert "no answer within 1 s" in errors["hang"]
    assert "3 attempts" in errors["hang"]

    # Every request, retries included, passed the SP's checks, with a fresh ID each time.
    ids: list[str] = []
    for name, sp in parties.items():
        received = sp.requests()
        assert len(received) == found[name].attempts, (name, received)
        for checked in received:
            assert checked.signature_ok, f"{name}: xmlsec1 did not verify the request"
            assert checked.python3_saml_error is None, f"{name}: {checked.python3_saml_error}"
            assert checked.soap_action == '"http://www.oasis-open.org/committees/security"'
            assert checked.content_type == "text/xml; charset=utf-8"
            assert (checked.name_id, checked.name_id_format) == ("alice@example.com", EMAIL_FORMAT)
            assert checked.session_indexes == [f"_idx-{name}"]
            assert checked.reason == "urn:oasis:names:tc:SAML:2.0:logout:user"
            ids.append(checked.request_id)
    assert len(set(ids)) == len(ids), "a request ID was reused"

    # The audit trail: a retry record per transient attempt, one final record each.
    retrying = sorted(
        ((row.provider or "").removeprefix("sp-"), row.detail["attempt"])
        for row in audit_rows(stack, event_id, "delivery.retrying")
    )
    assert retrying == [("busy", 1), ("hang", 1), ("hang", 2)], retrying
    finals: dict[str, tuple[str, str | None]] = {}
    for kind in ("delivery.succeeded", "delivery.failed"):
        for row in audit_rows(stack, event_id, kind):
            name = (row.provider or "").removeprefix("sp-")
            assert row.detail["protocol"] == "saml"
            finals[name] = (kind, row.detail.get("error"))
    assert finals == {
        name: (
            "delivery.succeeded" if d.status == "succeeded" else "delivery.failed",
            d.last_error,
        )
        for name, d in found.items()
    }, finals

    # No SAML message in the audit trail (as the CLI lists it) or the worker's log.
    listed = stack.cli("audit", "list", "--json", "--limit", "100000", env=SAML_ENV)
    assert listed.returncode == 0, listed.stderr
    logs = "".join(worker.output() for worker in stack.workers)
    for text in (listed.stdout, logs):
        for marker in ("LogoutRequest ", "<samlp:", "SignatureValue", "BEGIN", "&lol"):
            assert marker not in text, f"{marker!r} in the audit trail or the log"
    records = [json.loads(line) for line in listed.stdout.splitlines() if line.strip()]
    assert any(r["type"] == "logout.settled" for r in records)


def test_sha1_answers_and_an_sp_without_the_session(stack: Stack, sps: ServiceProviders) -> None:
    """An RSA-SHA1 signed answer fails naming the algorithm and the setting, and succeeds
    for the SP with allow_sha1_signatures = true; Shibboleth's no-session answer fails with
    the SP's codes and message in the delivery.failed record."""
    trust_idp_metadata(stack, sps)
    parties = {
        "sha1": (sps("sp-sha1", signed_sha1), {}),
        "sha1-allowed": (sps("sp-sha1-allowed", signed_sha1), {"allow_sha1_signatures": True}),
        "no-session": (sps("sp-no-session", no_session), {}),
    }
    start(
        stack,
        [saml_provider(sp, **settings) for sp, settings in parties.values()],
        [
            session_record("s-1", "alice"),
            *(
                saml_link("s-1", sp.name, "alice@example.com", f"_idx-{name}")
                for name, (sp, _) in parties.items()
            ),
        ],
    )
    logout = logout_event("s-1")
    publish(stack, logout)
    event_id = logout["event_id"]
    wait_settled(stack, event_id, len(parties), timeout=60)

    found = {d.provider.removeprefix("sp-"): d for d in deliveries(stack, event_id)}
    assert {name: d.status for name, d in found.items()} == {
        "sha1": "failed",
        "sha1-allowed": "succeeded",
        "no-session": "failed",
    }
    assert found["sha1"].last_error == (
        f"LogoutResponse's signature uses the SHA-1 signature algorithm {RSA_SHA1}, refused "
        "by default; the provider setting allow_sha1_signatures = true accepts it"
    )
    message = "Logout failed: no active session"
    assert found["no-session"].last_error == (
        f"LogoutResponse status {RESPONDER} / {PARTIAL_LOGOUT}: {message}"
    )
    [record] = [
        row
        for row in audit_rows(stack, event_id, "delivery.failed")
        if row.provider == "sp-no-session"
    ]
    assert record.detail["sp_status"] == {"codes": [RESPONDER, PARTIAL_LOGOUT], "message": message}
    assert record.detail["error"] == found["no-session"].last_error


def test_one_request_per_session_with_the_event_s_reason(
    stack: Stack, sps: ServiceProviders
) -> None:
    """Admin revocation: one LogoutRequest per provider session (its own SessionIndex), Reason
    admin; expiry: Reason global-timeout. All signed, all accepted."""
    trust_idp_metadata(stack, sps)
    sp = sps("sp-multi")
    start(
        stack,
        [saml_provider(sp)],
        [
            *(session_record(f"s-{n}", "carol") for n in (1, 2, 3)),
            session_record("s-9", "dave"),
            *(saml_link(f"s-{n}", "sp-multi", "carol@example.com", f"_idx-{n}") for n in (1, 2, 3)),
            saml_link("s-9", "sp-multi", "dave@example.com", "_idx-9"),
        ],
    )
    revoke = event("user.revoke_all", user_id="carol", initiator="admin", actor="admin-1")
    publish(stack, revoke)
    wait_settled(stack, revoke["event_id"], 3)
    carol = sp.requests()
    assert sorted(i for c in carol for i in c.session_indexes) == ["_idx-1", "_idx-2", "_idx-3"]
    assert {c.name_id for c in carol} == {"carol@example.com"}
    assert {c.reason for c in carol} == {"urn:oasis:names:tc:SAML:2.0:logout:admin"}

    expired = event("session.expired", session_id="s-9", reason="idle", initiator="system")
    publish(stack, expired)
    wait_settled(stack, expired["event_id"], 1)
    (dave,) = sp.requests()[3:]
    assert (dave.name_id, dave.session_indexes) == ("dave@example.com", ["_idx-9"])
    assert dave.reason == "urn:oasis:names:tc:SAML:2.0:logout:global-timeout"
    assert all(c.signature_ok and c.python3_saml_error is None for c in sp.requests())
    assert {d.status for d in deliveries(stack)} == {"succeeded"}
    assert (stack.data_dir / "saml-idp" / "key.pem").stat().st_mode & 0o077 == 0


def test_an_sp_loaded_from_its_metadata_is_logged_out(
    stack: Stack, sps: ServiceProviders, tmp_path: Path
) -> None:
    """An SP known only by Shibboleth-shaped metadata (its SOAP endpoint, its signing
    certificate), loaded with providers load: the worker sends it a LogoutRequest it accepts,
    and verifies its signed answer with the certificate from the metadata."""
    trust_idp_metadata(stack, sps)
    sp = sps("sp-metadata")
    template = (Path(__file__).parent.parent / "sp_metadata" / "shibboleth-sp3.xml").read_text()
    cert = "".join(sp.pair.cert_pem.strip().splitlines()[1:-1])
    document = template.replace("https://sp.example.org/shibboleth", SP_ENTITY)
    document = document.replace("https://sp.example.org/Shibboleth.sso/SLO/SOAP", sp.url)
    first = document.index("<ds:X509Certificate>") + len("<ds:X509Certificate>")
    document = document[:first] + cert + document[document.index("</ds:X509Certificate>") :]
    metadata = tmp_path / "sp-metadata.xml"
    metadata.write_text(document)
    providers = tmp_path / "providers.toml"
    providers.write_text(
        f'[[providers]]\nname = "sp-metadata"\nprotocol = "saml"\nmetadata_file = "{metadata}"\n'
        "require_signed_responses = true\nallow_http = true\n"
    )
    loaded = cli(stack, ["providers", "load", str(providers)], SAML_ENV)
    assert "providers: 1 created" in output(loaded)
    start(
        stack,
        [],
        [session_record("s-1", "erin"), saml_link("s-1", "sp-metadata", "erin@example.com", "_i")],
    )
    logout = logout_event("s-1")
    publish(stack, logout)
    wait_settled(stack, logout["event_id"], 1)
    (request,) = sp.requests()
    assert request.signature_ok
    assert request.python3_saml_error is None
    assert [d.status for d in deliveries(stack)] == ["succeeded"]
