"""Independent SAML service providers as judges of our Single Logout: Shibboleth SP 3 and
SimpleSAMLphp, from Debian's packages, on 127.0.0.1 (``judges.py``). Each trusts our IdP
through the output of ``logout-orchestrator saml metadata``, unchanged; it gets its session
from a SAML Response the test signs with the IdP's key, and we know it only by the metadata
it serves itself, loaded with ``providers load``."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from lxml import etree
from playwright.sync_api import Browser, BrowserContext

from tests.saml_support import EMAIL_FORMAT, KeyPair, sso_response

from .browser import idp_web, launch
from .judges import ShibbolethSp, SimpleSamlPhpSp
from .support import (
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
from .test_browser_native import wait_for_url
from .test_saml import (
    DELIVERY_SETTINGS,
    ISSUER,
    PARTIAL_LOGOUT,
    RESPONDER,
    RSA_SHA1,
    SAML_ENV,
)

pytestmark = pytest.mark.integration

DS = "{http://www.w3.org/2000/09/xmldsig#}"
MD = "{urn:oasis:names:tc:SAML:2.0:metadata}"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
NO_SESSION = "Your session is not available in the session store"


def signature_algorithms(soap: bytes) -> list[str]:
    """The SignatureMethod of every signature in a SOAP answer."""
    return [
        str(method.get("Algorithm"))
        for method in etree.fromstring(soap).iter(f"{DS}SignatureMethod")
    ]


def idp_metadata(stack: Stack, env: dict[str, str] | None = None) -> bytes:
    """``saml metadata`` as an SP operator saves it (it makes the IdP's key pair)."""
    stack.protocols = ["saml"]
    return output(cli(stack, ["saml", "metadata"], {**SAML_ENV, **(env or {})})).encode()


def idp_key(stack: Stack) -> KeyPair:
    """The key pair our IdP signs with (generated into the data directory)."""
    folder = stack.data_dir / "saml-idp"
    key, cert = folder / "key.pem", folder / "cert.pem"
    return KeyPair(key.read_text(), cert.read_text(), key, cert)


def load_from_metadata(
    stack: Stack, name: str, metadata_url: str, folder: Path, extra: str = ""
) -> None:
    """``providers load`` of the SP as its operator hands it out: its own metadata
    (``extra``: more lines of its entry)."""
    metadata = folder / f"{name}-metadata.xml"
    metadata.write_bytes(httpx.get(metadata_url, timeout=10).content)
    providers = folder / f"{name}-providers.toml"
    providers.write_text(
        f'[[providers]]\nname = "{name}"\nprotocol = "saml"\nmetadata_file = "{metadata}"\n'
        f"require_signed_responses = true\nallow_http = true\n{extra}"
    )
    loaded = output(cli(stack, ["providers", "load", str(providers)], SAML_ENV))
    assert "providers: 1 created" in loaded, loaded


def link(
    session_id: str, provider: str, name_id: str, sp_entity: str, index: str
) -> dict[str, str]:
    """The IdP's record of a SAML session at ``provider``, as its SSO issued it."""
    return {
        "kind": "provider_session",
        "session_id": session_id,
        "provider": provider,
        "name_id": name_id,
        "name_id_format": EMAIL_FORMAT,
        "sp_name_qualifier": sp_entity,
        "session_index": index,
    }


def shibboleth_login(sp: ShibbolethSp, idp: KeyPair, name_id: str, index: str) -> httpx.Cookies:
    """Single sign-on at ``sp``: our signed Response posted to its ACS, unsolicited; returns
    the browser's cookies, once the SP's Session handler shows the session."""
    acs = sp.handler("SAML2/POST")
    response = sso_response(
        idp,
        issuer=ISSUER,
        acs_url=acs,
        audience=sp.entity_id,
        name_id=name_id,
        session_index=index,
    )
    with httpx.Client(timeout=10) as browser:
        answer = browser.post(acs, data={"SAMLResponse": base64.b64encode(response).decode()})
        assert answer.status_code == 302, f"{answer.status_code}: {answer.text}\n{sp.logs()}"
        cookies = browser.cookies
    shown = sp.session(cookies)
    assert f"Identity Provider:</strong> {ISSUER}" in shown, f"{shown}\n{sp.logs()}"
    return cookies


def test_shibboleth_sp_logged_out_over_soap(stack: Stack, tmp_path: Path) -> None:
    """Shibboleth SP 3 (signing its messages) given our metadata unchanged: our SOAP
    LogoutRequest ends its session, and its answer, signed RSA-SHA256 because the metadata
    advertises the algorithms, is recorded as delivery.succeeded. Asked again for the same
    NameID it answers Responder / PartialLogout: delivery.failed with its codes (and its
    message: none) in the audit record."""
    metadata = idp_metadata(stack)
    with ShibbolethSp(metadata, ISSUER) as sp:
        sp.start()
        cookies = shibboleth_login(sp, idp_key(stack), "alice@example.com", "_idx-1")
        load_from_metadata(stack, "shib", sp.handler("Metadata"), tmp_path)
        stack.seed(
            records=[
                session_record("s-1", "alice"),
                link("s-1", "shib", "alice@example.com", sp.entity_id, "_idx-1"),
                session_record("s-2", "alice"),
                link("s-2", "shib", "alice@example.com", sp.entity_id, "_idx-1"),
            ]
        )
        stack.start_worker({**DELIVERY_SETTINGS, **SAML_ENV})

        first = logout_event("s-1")
        publish(stack, first)
        wait_settled(stack, first["event_id"], 1)
        [delivery] = deliveries(stack, first["event_id"])
        assert delivery.status == "succeeded", f"{delivery.last_error}\n{sp.logs()}"
        [record] = audit_rows(stack, first["event_id"], "delivery.succeeded")
        assert record.provider == "shib"
        assert NO_SESSION in sp.session(cookies), "the SP still holds the session"
        [answer] = sp.exchanges("/Shibboleth.sso/SLO/SOAP")
        assert signature_algorithms(answer.response) == [RSA_SHA256], answer.response

        second = logout_event("s-2")
        publish(stack, second)
        wait_settled(stack, second["event_id"], 1)
        [delivery] = deliveries(stack, second["event_id"])
        assert delivery.status == "failed"
        [record] = audit_rows(stack, second["event_id"], "delivery.failed")
        # Shibboleth SP 3.4 gives no StatusMessage with it: the record says so (None).
        assert record.detail["sp_status"] == {"codes": [RESPONDER, PARTIAL_LOGOUT], "message": None}
        assert record.detail["error"] == delivery.last_error
        assert delivery.last_error == f"LogoutResponse status {RESPONDER} / {PARTIAL_LOGOUT}"
        [_, answer] = sp.exchanges("/Shibboleth.sso/SLO/SOAP")
        assert signature_algorithms(answer.response) == [RSA_SHA256], answer.response


def test_shibboleth_sp_without_algsupport_signs_sha1_and_is_refused(
    stack: Stack, tmp_path: Path
) -> None:
    """The control: the same SP given our metadata without its algsupport extension (as
    before issue 12) signs its answer RSA-SHA1, which the worker refuses by default, naming
    the algorithm and the setting, although the SP ended the session."""
    document = etree.fromstring(idp_metadata(stack))
    [extensions] = document.iter(f"{MD}Extensions")
    document.remove(extensions)
    metadata = etree.tostring(document, xml_declaration=True, encoding="UTF-8")
    with ShibbolethSp(metadata, ISSUER) as sp:
        sp.start()
        cookies = shibboleth_login(sp, idp_key(stack), "carol@example.com", "_idx-3")
        load_from_metadata(stack, "shib", sp.handler("Metadata"), tmp_path)
        stack.seed(
            records=[
                session_record("s-3", "carol"),
                link("s-3", "shib", "carol@example.com", sp.entity_id, "_idx-3"),
            ]
        )
        stack.start_worker({**DELIVERY_SETTINGS, **SAML_ENV})
        logout = logout_event("s-3")
        publish(stack, logout)
        wait_settled(stack, logout["event_id"], 1)
        [delivery] = deliveries(stack, logout["event_id"])
        assert delivery.status == "failed"
        assert delivery.last_error == (
            f"LogoutResponse's signature uses the SHA-1 signature algorithm {RSA_SHA1}, refused "
            "by default; the provider setting allow_sha1_signatures = true accepts it"
        )
        assert NO_SESSION in sp.session(cookies)
        [answer] = sp.exchanges("/Shibboleth.sso/SLO/SOAP")
        assert signature_algorithms(answer.response) == [RSA_SHA1], answer.response


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Debian Chromium for the module (a fresh context per test)."""
    with launch() as (_, chromium):
        yield chromium


def simplesamlphp_login(
    sp: SimpleSamlPhpSp, browser: BrowserContext, idp: KeyPair, name_id: str, index: str
) -> None:
    """Single sign-on at ``sp`` in the browser: our signed Response posted to its ACS,
    unsolicited, then back to its test page, which shows the session."""
    acs = sp.url("saml2-acs.php")
    response = sso_response(
        idp,
        issuer=ISSUER,
        acs_url=acs,
        audience=sp.entity_id,
        name_id=name_id,
        session_index=index,
    )
    form: dict[str, str | float | bool] = {
        "SAMLResponse": base64.b64encode(response).decode(),
        "RelayState": sp.login_url,
    }
    answer = browser.request.post(acs, form=form, max_redirects=0)
    assert answer.status == 303, f"{answer.status}: {answer.text()}\n{sp.logs()}"
    assert simplesamlphp_session(sp, browser), sp.logs()


def simplesamlphp_session(sp: SimpleSamlPhpSp, browser: BrowserContext) -> bool:
    """Whether the SP holds a session for the browser: its test page shows it (200), or
    sends the browser to the IdP to sign in (a redirect, not followed)."""
    answer = browser.request.get(sp.login_url, max_redirects=0)
    assert answer.status in (200, 302, 303), f"{answer.status}: {answer.text()}"
    return answer.status == 200


def test_simplesamlphp_sp_logged_out_in_the_browser(
    stack: Stack, browser: Browser, tmp_path: Path
) -> None:
    """SimpleSAMLphp 1.19 as an SP, given our metadata unchanged (read as XML), signing its
    logout messages and checking ours: front-channel, HTTP-Redirect, in headless Chromium.
    (Not SOAP: its SP offers the SOAP SLO binding only with an SQL store, and with one,
    Debian's 1.19.7 answers our SOAP LogoutRequest with an "Unhandled exception" HTML page,
    status 200, from a TypeError in saml2-logout.php: SAML2\\Message::setDestination() given
    an array. Its SOAP logout cannot succeed.) The stage plan sends the browser
    to its SLO endpoint with our signed LogoutRequest; it ends the browser's session and
    redirects back with a LogoutResponse signed RSA-SHA256, which our return endpoint
    verifies: frontchannel.completed, success."""
    with stack.runtime(issuer=ISSUER) as runtime, idp_web(runtime) as web:
        slo = {"redirect": web.return_url, "post": web.return_url}
        metadata = idp_metadata(stack, {"LOGOUT_SAML_SLO_URLS": json.dumps(slo)})
        with SimpleSamlPhpSp(metadata, ISSUER) as sp:
            sp.start()
            context = browser.new_context()
            simplesamlphp_login(sp, context, idp_key(stack), "bob@example.com", "_idx-7")
            load_from_metadata(
                stack,
                "ssp",
                sp.url("metadata.php"),
                tmp_path,
                'logout_method = "frontchannel_native"\n',
            )
            stack.seed(
                records=[
                    session_record("s-1", "bob"),
                    link("s-1", "ssp", "bob@example.com", sp.entity_id, "_idx-7"),
                ]
            )
            stack.start_worker({**DELIVERY_SETTINGS, **SAML_ENV})

            plan_id = str(uuid.uuid4())
            logout = event("logout.user", session_id="s-1", plan_id=plan_id)
            waiter = runtime.waiter()
            try:
                publish(stack, logout)
                waited = waiter.wait_plan(plan_id, 30.0)
            finally:
                waiter.close()
            assert waited.plan is not None, "the worker built no plan in 30 s"
            page = context.new_page()
            page.goto(web.url(f"/logout/plans/{plan_id}"))
            wait_for_url(page, web.final_url, timeout=30)

            assert not simplesamlphp_session(sp, context), "the SP still holds the session"
            [answer] = [
                e
                for e in sp.exchanges("/module.php/saml/sp/saml2-logout.php/default-sp")
                if e.location and e.location.startswith(web.return_url)
            ]
            query = parse_qs(urlsplit(answer.location or "").query)
            assert query["SigAlg"] == [RSA_SHA256], query
            context.close()

    [record] = audit_rows(stack, logout["event_id"], "frontchannel.completed")
    assert (record.provider, record.outcome) == ("ssp", "success"), record.detail
