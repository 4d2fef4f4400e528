"""The native chain in headless Chromium: a real worker builds the plan for a published
logout, and the browser is sent to three SAML SPs (HTTP-POST binding) one after another.
Two answer with a signed LogoutResponse through the browser; one never does (it hangs,
hangs only the POST, or is down). The chain goes on without it, the browser ends on the
IdP's final page, and the trail shows two steps completed and one skipped. An SP-started
logout ends with the IdP's signed LogoutResponse, PartialLogout, back at that SP."""

from __future__ import annotations

import base64
import html
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from playwright.sync_api import Browser, Page

from tests.saml_support import (
    EMAIL_FORMAT,
    LOGOUT_REQUEST,
    LOGOUT_RESPONSE,
    SP_ENTITY,
    KeyPair,
    make_pair,
    onelogin_settings,
    sp_logout_response,
    xmlsec1_verify,
)

from .browser import Recorded, RecordingServer, idp_web, launch
from .support import (
    LoopbackServers,
    Stack,
    audit_rows,
    closed_port,
    deliveries,
    event,
    publish,
    session_record,
)

pytestmark = pytest.mark.integration

ISSUER = "https://idp.test"
STEP_MS = 2500
P = "{urn:oasis:names:tc:SAML:2.0:protocol}"
A = "{urn:oasis:names:tc:SAML:2.0:assertion}"
PARTIAL = "urn:oasis:names:tc:SAML:2.0:status:PartialLogout"


class NativeSp(RecordingServer):
    """A SAML SP on the POST binding: answers a LogoutRequest with a page that POSTs its
    signed LogoutResponse (python3-saml) back to the IdP's return endpoint."""

    def __init__(self, name: str, keys: KeyPair, mode: str = "answer") -> None:
        super().__init__(name, mode, path="/saml/sls")
        self.keys = keys
        self.idp_cert = ""
        self.return_url = ""

    def page(self, request: Recorded) -> bytes:
        if request.method != "POST" or "SAMLRequest" not in request.form:
            return b"<!doctype html><title>SP</title>SP"
        xml = base64.b64decode(request.form["SAMLRequest"])
        request_id = etree.fromstring(xml).get("ID") or ""
        settings = onelogin_settings(self.idp_cert, self.url, want_signed=False)
        answer = sp_logout_response(settings, request_id, signer=self.keys)
        fields = {
            "SAMLResponse": base64.b64encode(answer).decode(),
            "RelayState": request.form.get("RelayState", ""),
        }
        inputs = "".join(
            f'<input type="hidden" name="{k}" value="{html.escape(v)}">' for k, v in fields.items()
        )
        return (
            "<!doctype html><title>SP logged out</title>"
            f'<form method="post" action="{html.escape(self.return_url)}">{inputs}</form>'
            "<script>document.forms[0].submit()</script>"
        ).encode()


def wait_for_url(page: Page, url: str, timeout: float) -> None:
    """Until the page shows ``url``. (Playwright's own wait gives up on the navigation a
    step's timer cancels: that abort is the mechanism at work, not a failure.)"""
    deadline = time.monotonic() + timeout
    while page.url != url:
        assert time.monotonic() < deadline, f"still on {page.url} after {timeout:g} s"
        page.wait_for_timeout(50)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Debian Chromium for the module (a fresh context per test)."""
    with launch() as (_, chromium):
        yield chromium


@pytest.fixture
def servers() -> Iterator[LoopbackServers[NativeSp]]:
    """The loopback SPs of one test, stopped (and hung answers released) after it."""
    running: LoopbackServers[NativeSp] = LoopbackServers()
    yield running
    running.close()


def saml_native(name: str, url: str, keys: KeyPair) -> dict[str, Any]:
    """An SP logged out by a top-level POST; its LogoutResponses must be signed."""
    return {
        "name": name,
        "protocol": "saml",
        "entity_id": SP_ENTITY,
        "sls_url": url,
        "sls_binding": "post",
        "logout_method": "frontchannel_native",
        "sp_certificate": str(keys.cert_path),
        "require_signed_responses": True,
        "allow_http": True,
    }


def saml_link(provider: str) -> dict[str, Any]:
    return {
        "kind": "provider_session",
        "session_id": "s-1",
        "provider": provider,
        "name_id": f"alice@{provider}.example.com",
        "name_id_format": EMAIL_FORMAT,
        "sp_name_qualifier": SP_ENTITY,
        "session_index": f"_index-{provider}",
    }


def idp_settings(keys: KeyPair) -> dict[str, Any]:
    """The IdP's issuer and SAML key, the same for the worker and the web app."""
    return {
        "issuer": ISSUER,
        "protocol_settings": {
            "saml": {"key_file": str(keys.key_path), "cert_file": str(keys.cert_path)}
        },
    }


def worker_env(keys: KeyPair) -> dict[str, str]:
    return {
        "LOGOUT_ISSUER": ISSUER,
        "LOGOUT_SAML_KEY_FILE": str(keys.key_path),
        "LOGOUT_SAML_CERT_FILE": str(keys.cert_path),
        "LOGOUT_FRONTCHANNEL_NATIVE_TIMEOUT_MS": str(STEP_MS),
    }


def check_request(sp: NativeSp, got: Recorded, idp: KeyPair, delivery_id: str, work: Path) -> None:
    """The POSTed LogoutRequest: signed (xmlsec1), for this SP, naming this session."""
    assert set(got.form) == {"SAMLRequest", "RelayState"}
    assert got.form["RelayState"] == delivery_id
    xml = base64.b64decode(got.form["SAMLRequest"])
    verified, output = xmlsec1_verify(xml, idp.cert_path, LOGOUT_REQUEST, work)
    assert verified, output
    root = etree.fromstring(xml)
    assert root.get("Destination") == sp.url
    assert root.findtext(f"{A}Issuer") == ISSUER
    assert root.findtext(f"{A}NameID") == f"alice@{sp.name}.example.com"
    assert root.findtext(f"{P}SessionIndex") == f"_index-{sp.name}"


@pytest.mark.alone  # it times the chain: the silent SP costs its own timeout, no more
@pytest.mark.parametrize("silent", ["hang", "hang_post", "down"])
def test_native_chain_goes_on_past_a_silent_sp(
    stack: Stack,
    servers: LoopbackServers[NativeSp],
    browser: Browser,
    tmp_path: Path,
    silent: str,
) -> None:
    """Payroll and expenses answer, travel never does: the browser still ends on the IdP's
    final page; two steps completed, one skipped, in the plan's order."""
    idp = make_pair(tmp_path / "keys", "idp")
    payroll = servers.start(NativeSp("payroll", make_pair(tmp_path / "keys", "payroll")))
    expenses = servers.start(NativeSp("expenses", make_pair(tmp_path / "keys", "expenses")))
    travel_keys = make_pair(tmp_path / "keys", "travel")
    travel: NativeSp | None = None
    if silent == "down":
        travel_url = f"http://127.0.0.1:{closed_port()}/saml/sls"
    else:
        travel = servers.start(NativeSp("travel", travel_keys, mode=silent))
        travel_url = travel.url
    providers = [
        saml_native("payroll", payroll.url, payroll.keys),
        saml_native("travel", travel_url, travel_keys),
        saml_native("expenses", expenses.url, expenses.keys),
    ]
    records = [session_record("s-1", "alice"), *(saml_link(p["name"]) for p in providers)]
    stack.protocols = ["saml"]
    stack.seed(providers=providers, records=records)
    stack.start_worker(worker_env(idp))

    plan_id = str(uuid.uuid4())
    logout = event("logout.user", session_id="s-1", plan_id=plan_id)
    settings = idp_settings(idp)
    with stack.runtime(**settings) as runtime, idp_web(runtime) as web:
        for sp in (payroll, expenses, travel):
            if sp is not None:
                sp.idp_cert, sp.return_url = idp.cert_pem, web.return_url
        waiter = runtime.waiter()
        try:
            publish(stack, logout)
            waited = waiter.wait_plan(plan_id, 30.0)
        finally:
            waiter.close()
        assert waited.plan is not None, "the worker built no plan in 30 s"
        plan = waited.plan
        assert [(s.index, s.kind, len(s.entries)) for s in plan.stages] == [
            (0, "logout", 0),
            (1, "native_logout", 3),
        ]
        order = [e.provider for e in plan.stages[1].entries]
        context = browser.new_context()
        page = context.new_page()
        opened = time.monotonic()
        page.goto(web.url(f"/logout/plans/{plan_id}"))
        wait_for_url(page, web.final_url, timeout=3 * STEP_MS / 1000 + 10)
        took = web.finals[-1] - opened
        assert page.locator("h1").inner_text() == "You are signed out"
        context.close()

    ids = {d.provider: d.id for d in deliveries(stack, logout["event_id"])}
    for sp in (payroll, expenses):
        (got,) = sp.requests("POST")
        check_request(sp, got, idp, ids[sp.name], tmp_path)
    posts_to_travel = travel.requests("POST") if travel is not None else []
    assert len(posts_to_travel) == (1 if silent == "hang_post" else 0)

    completed = audit_rows(stack, logout["event_id"], "frontchannel.completed")
    skipped = audit_rows(stack, logout["event_id"], "frontchannel.skipped")
    assert sorted((r.provider, r.outcome) for r in completed) == [
        ("expenses", "success"),
        ("payroll", "success"),
    ], [r.detail for r in completed]
    assert [(r.provider, r.outcome) for r in skipped] == [("travel", "skipped")]
    reason = skipped[0].detail["reason"]
    assert reason == ("unreachable" if silent == "down" else "timeout")
    for record in [*completed, *skipped]:
        assert record.detail["plan_id"] == plan_id
        assert record.detail["delivery_id"] == ids[record.provider or ""]
    # The steps ran in the plan's order, and the silent SP cost at most its own timeout.
    trail = sorted([*completed, *skipped], key=lambda r: r.seq)
    assert [r.provider for r in trail] == order
    assert took < STEP_MS / 1000 + 6.0, f"the chain took {took:.2f} s"
    if silent != "down":
        assert took >= STEP_MS / 1000


def test_sp_started_logout_answers_partial(
    stack: Stack, servers: LoopbackServers[NativeSp], browser: Browser, tmp_path: Path
) -> None:
    """An SP starts the logout; another SP never answers; the chain ends with the IdP's
    signed LogoutResponse POSTed to the starting SP: Success with PartialLogout."""
    idp = make_pair(tmp_path / "keys", "idp")
    portal = servers.start(NativeSp("portal", make_pair(tmp_path / "keys", "portal")))
    payroll = servers.start(NativeSp("payroll", make_pair(tmp_path / "keys", "payroll")))
    travel = servers.start(NativeSp("travel", make_pair(tmp_path / "keys", "travel"), "hang"))
    providers = [saml_native(sp.name, sp.url, sp.keys) for sp in (portal, payroll, travel)]
    records = [session_record("s-1", "alice"), *(saml_link(p["name"]) for p in providers)]
    stack.protocols = ["saml"]
    stack.seed(providers=providers, records=records)
    stack.start_worker(worker_env(idp))

    plan_id = str(uuid.uuid4())
    logout = event(
        "logout.provider",
        session_id="s-1",
        provider="portal",
        full_logout=True,
        plan_id=plan_id,
        in_response_to="_portal-request-1",
        relay_state="back-to-portal",
    )
    settings = idp_settings(idp)
    with stack.runtime(**settings) as runtime, idp_web(runtime) as web:
        for sp in (portal, payroll, travel):
            sp.idp_cert, sp.return_url = idp.cert_pem, web.return_url
        waiter = runtime.waiter()
        try:
            publish(stack, logout)
            waited = waiter.wait_plan(plan_id, 30.0)
        finally:
            waiter.close()
        assert waited.plan is not None
        assert waited.plan.respond_to is not None
        context = browser.new_context()
        page = context.new_page()
        page.goto(web.url(f"/logout/plans/{plan_id}"))
        deadline = time.monotonic() + 3 * STEP_MS / 1000 + 10
        answer: Recorded | None = None
        while answer is None and time.monotonic() < deadline:
            answer = next((r for r in portal.requests("POST") if "SAMLResponse" in r.form), None)
            page.wait_for_timeout(100)
        context.close()

    assert answer is not None, "the starting SP got no LogoutResponse"
    assert answer.form["RelayState"] == "back-to-portal"
    xml = base64.b64decode(answer.form["SAMLResponse"])
    verified, output = xmlsec1_verify(xml, idp.cert_path, LOGOUT_RESPONSE, tmp_path)
    assert verified, output
    root = etree.fromstring(xml)
    assert root.get("InResponseTo") == "_portal-request-1"
    assert root.get("Destination") == portal.url
    top = root.find(f"{P}Status/{P}StatusCode")
    assert top is not None
    assert top.get("Value") == "urn:oasis:names:tc:SAML:2.0:status:Success"
    sub = top.find(f"{P}StatusCode")
    assert sub is not None
    assert sub.get("Value") == PARTIAL
    skipped = audit_rows(stack, logout["event_id"], "frontchannel.skipped")
    assert [r.provider for r in skipped] == ["travel"]
