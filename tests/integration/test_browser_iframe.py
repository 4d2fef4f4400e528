"""The iframe stage in headless Chromium: a real worker builds the plan for a published
``logout.user``, the IdP's web app serves it, and the browser logs the user out of three
OIDC relying parties and two SAML service providers on 127.0.0.1 at once. One RP never
answers: it times out alone, the others are not held up, and every outcome is audited."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from onelogin.saml2.auth import OneLogin_Saml2_Auth
from playwright.sync_api import Browser

from tests.saml_support import EMAIL_FORMAT, SP_ENTITY, KeyPair, make_pair, onelogin_settings

from .browser import RecordingServer, idp_web, launch
from .support import (
    LoopbackServers,
    Stack,
    audit_rows,
    deliveries,
    event,
    publish,
    session_record,
)

pytestmark = pytest.mark.integration

ISSUER = "https://idp.test"
FRAME_MS = 2500
PAGE_MS = 8000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Debian Chromium for the module (a fresh context per test)."""
    with launch() as (_, chromium):
        yield chromium


@pytest.fixture
def servers() -> Iterator[LoopbackServers[RecordingServer]]:
    """The loopback providers of one test, stopped (and hung answers released) after it."""
    running: LoopbackServers[RecordingServer] = LoopbackServers()
    yield running
    running.close()


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
        "LOGOUT_FRONTCHANNEL_FRAME_TIMEOUT_MS": str(FRAME_MS),
        "LOGOUT_FRONTCHANNEL_PAGE_TIMEOUT_MS": str(PAGE_MS),
    }


def slo(sp: RecordingServer, idp_cert: str, query: dict[str, str]) -> list[str]:
    """python3-saml, as the SP, processing the Redirect-binding request it got: its errors."""
    host = sp.base_url.removeprefix("http://")
    request_data = {
        "https": "off",
        "http_host": host,
        "script_name": sp.path,
        "get_data": query,
    }
    auth = OneLogin_Saml2_Auth(request_data, onelogin_settings(idp_cert, sp.url))
    auth.process_slo(keep_local_session=True)
    errors: list[str] = auth.get_errors()
    return [*errors, auth.get_last_error_reason() or ""] if errors else []


@pytest.mark.alone  # it times each frame (under 2 s) and the hung one's timeout
def test_iframe_stage_in_chromium(
    stack: Stack, servers: LoopbackServers[RecordingServer], browser: Browser, tmp_path: Path
) -> None:
    """Five providers in parallel frames; the hung RP times out alone; outcomes audited."""
    keys = make_pair(tmp_path / "keys", "idp")
    rps = [
        servers.start(RecordingServer("wiki")),
        servers.start(RecordingServer("chat", mode="hang")),
        servers.start(RecordingServer("mail")),
    ]
    sps = [servers.start(RecordingServer("hr")), servers.start(RecordingServer("travel"))]
    providers: list[dict[str, Any]] = [
        {
            "name": rp.name,
            "protocol": "oidc",
            "client_id": f"client-{rp.name}",
            "frontchannel_logout_uri": f"{rp.url}?lang=en",
            "frontchannel_logout_session_required": True,
            "logout_method": "frontchannel",
            "allow_http": True,
        }
        for rp in rps
    ] + [
        {
            "name": sp.name,
            "protocol": "saml",
            "entity_id": SP_ENTITY,
            "sls_url": sp.url,
            "sls_binding": "redirect",
            "logout_method": "frontchannel_iframe",
            "allow_http": True,
        }
        for sp in sps
    ]
    records: list[dict[str, Any]] = [session_record("s-1", "alice")]
    records += [
        {
            "kind": "provider_session",
            "session_id": "s-1",
            "provider": rp.name,
            "sid": f"sid-{rp.name}",
        }
        for rp in rps
    ]
    records += [
        {
            "kind": "provider_session",
            "session_id": "s-1",
            "provider": sp.name,
            "name_id": f"alice@{sp.name}.example.com",
            "name_id_format": EMAIL_FORMAT,
            "sp_name_qualifier": SP_ENTITY,
            "session_index": f"_index-{sp.name}",
        }
        for sp in sps
    ]
    stack.protocols = ["oidc", "saml"]
    stack.seed(providers=providers, records=records)
    stack.start_worker(worker_env(keys))

    plan_id = str(uuid.uuid4())
    logout = event("logout.user", session_id="s-1", plan_id=plan_id)
    with stack.runtime(**idp_settings(keys)) as runtime, idp_web(runtime) as idp:
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
            (1, "iframe_logout", 5),
        ]
        context = browser.new_context()
        page = context.new_page()
        opened = time.monotonic()
        page.goto(idp.url(f"/logout/plans/{plan_id}"))
        page.wait_for_url(idp.final_url, timeout=PAGE_MS + 5000)
        ended = idp.finals[-1]
        context.close()

    # Each provider saw its request at once (in parallel), with the right identifiers.
    for rp in rps:
        (got,) = rp.requests()
        assert got.method == "GET"
        assert got.params == {"lang": "en", "iss": ISSUER, "sid": f"sid-{rp.name}"}
        assert got.at - opened < 2.0, f"{rp.name} was asked {got.at - opened:.2f} s after"
    for sp in sps:
        (got,) = sp.requests()
        assert got.method == "GET"
        assert set(got.params) == {"SAMLRequest", "RelayState", "SigAlg", "Signature"}
        assert slo(sp, keys.cert_pem, got.params) == [], f"{sp.name}: python3-saml refused it"
        assert got.at - opened < 2.0
    # The hung RP held the page up for its own timeout, not for the page's.
    assert FRAME_MS / 1000 <= ended - opened < PAGE_MS / 1000, f"{ended - opened:.2f} s"

    delivery_ids = {d.provider: d.id for d in deliveries(stack, logout["event_id"])}
    loaded = audit_rows(stack, logout["event_id"], "frontchannel.loaded")
    timed_out = audit_rows(stack, logout["event_id"], "frontchannel.timed_out")
    assert sorted(r.provider or "" for r in loaded) == ["hr", "mail", "travel", "wiki"]
    assert [r.provider for r in timed_out] == ["chat"]
    for record in [*loaded, *timed_out]:
        assert record.detail["plan_id"] == plan_id
        assert record.detail["delivery_id"] == delivery_ids[record.provider or ""]
        assert record.user_id == "alice"
        assert record.session_id == "s-1"
    # The others loaded well before the hung one's timeout.
    assert all(r.detail["elapsed_ms"] < FRAME_MS for r in loaded), [r.detail for r in loaded]
    assert timed_out[0].detail["elapsed_ms"] >= FRAME_MS
