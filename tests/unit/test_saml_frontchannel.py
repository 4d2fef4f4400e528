"""An SP's LogoutResponse brought back by the browser after a native step: HTTP-POST
(signed XML) and HTTP-Redirect (signed query), each checked against the request the step
carried. The responses are built by python3-saml, as such an SP would send them."""

from __future__ import annotations

import base64
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus, unquote_plus, urlsplit

import pytest
import xmlsec
from lxml import etree
from onelogin.saml2.constants import OneLogin_Saml2_Constants

from protocols import FrontchannelAnswer, FrontchannelEntry, ProviderInfo
from protocols.saml import SamlHandler, redirect_url
from schemas.errors import PermanentDeliveryError
from tests.saml_support import (
    KeyPair,
    context,
    handler_with,
    make_pair,
    onelogin_settings,
    provider,
    provider_session,
    sp_logout_response,
)

SLS = "https://sp.test/saml/sls"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, KeyPair]:
    folder = tmp_path_factory.mktemp("keys")
    return {name: make_pair(folder, name) for name in ("idp", "sp", "attacker")}


@pytest.fixture
def handler(keys: dict[str, KeyPair], tmp_path: Path) -> SamlHandler:
    return handler_with(keys["idp"], tmp_path)


def native_sp(handler: SamlHandler, keys: dict[str, KeyPair], **fields: Any) -> ProviderInfo:
    values: dict[str, Any] = {
        "sls_url": SLS,
        "sls_binding": "post",
        "logout_method": "frontchannel_native",
        "sp_certificate": str(keys["sp"].cert_path),
        "require_signed_responses": True,
        **fields,
    }
    return provider(handler, **values)


def request_id(entry: FrontchannelEntry) -> str:
    if "SAMLRequest" in entry.form:
        xml = base64.b64decode(entry.form["SAMLRequest"])
    else:
        query = dict(p.split("=", 1) for p in urlsplit(entry.url).query.split("&"))
        xml = zlib.decompress(base64.b64decode(unquote_plus(query["SAMLRequest"])), -15)
    return etree.fromstring(xml).get("ID") or ""


def response_xml(keys: dict[str, KeyPair], rid: str, *, signer: str | None, **kw: Any) -> bytes:
    settings = onelogin_settings(keys["idp"].cert_pem, SLS, want_signed=False)
    return sp_logout_response(settings, rid, signer=keys[signer] if signer else None, **kw)


def posted(xml: bytes, relay_state: str = "d-1") -> FrontchannelAnswer:
    value = base64.b64encode(xml).decode()
    return FrontchannelAnswer("POST", "", {"SAMLResponse": value, "RelayState": relay_state})


def redirected(xml: bytes, key: KeyPair | None, relay_state: str = "d-1") -> FrontchannelAnswer:
    signing = (
        xmlsec.Key.from_memory(key.key_pem.encode(), xmlsec.constants.KeyDataFormatPem)
        if key is not None
        else None
    )
    url = redirect_url(
        "https://idp.test/logout/native/return",
        etree.fromstring(xml),
        parameter="SAMLResponse",
        relay_state=relay_state,
        key=signing,
    )
    return FrontchannelAnswer("GET", urlsplit(url).query)


def test_a_signed_post_answer_is_accepted(handler: SamlHandler, keys: dict[str, KeyPair]) -> None:
    sp = native_sp(handler, keys)
    entry = handler.frontchannel_entry(sp, provider_session(), context())
    handler.frontchannel_answer(
        sp, entry, posted(response_xml(keys, request_id(entry), signer="sp"))
    )


@pytest.mark.parametrize(
    ("signer", "rid", "status", "error"),
    [
        (None, None, None, "not signed"),
        ("attacker", None, None, "does not verify"),
        ("sp", "_other", None, "InResponseTo"),
        ("sp", None, OneLogin_Saml2_Constants.STATUS_REQUESTER, "LogoutResponse status"),
    ],
)
def test_a_bad_post_answer_is_refused(
    handler: SamlHandler,
    keys: dict[str, KeyPair],
    signer: str | None,
    rid: str | None,
    status: str | None,
    error: str,
) -> None:
    sp = native_sp(handler, keys)
    entry = handler.frontchannel_entry(sp, provider_session(), context())
    extra = {"status": status} if status else {}
    xml = response_xml(keys, rid or request_id(entry), signer=signer, **extra)
    with pytest.raises(PermanentDeliveryError, match=error):
        handler.frontchannel_answer(sp, entry, posted(xml))


def test_a_signed_redirect_answer_to_a_redirect_step(
    handler: SamlHandler, keys: dict[str, KeyPair]
) -> None:
    """A redirect-binding native step (its request ID read from its URL), answered by a
    redirect whose query the SP signed."""
    sp = native_sp(handler, keys, sls_binding="redirect")
    entry = handler.frontchannel_entry(sp, provider_session(), context())
    assert entry.binding == "redirect"
    xml = response_xml(keys, request_id(entry), signer=None)
    handler.frontchannel_answer(sp, entry, redirected(xml, keys["sp"]))


def test_a_bad_redirect_answer_is_refused(handler: SamlHandler, keys: dict[str, KeyPair]) -> None:
    sp = native_sp(handler, keys)
    entry = handler.frontchannel_entry(sp, provider_session(), context())
    xml = response_xml(keys, request_id(entry), signer=None)
    with pytest.raises(PermanentDeliveryError, match="query is not signed"):
        handler.frontchannel_answer(sp, entry, redirected(xml, None))
    with pytest.raises(PermanentDeliveryError, match="query signature does not verify"):
        handler.frontchannel_answer(sp, entry, redirected(xml, keys["attacker"]))
    good = redirected(xml, keys["sp"], relay_state="d-1")
    tampered = FrontchannelAnswer("GET", good.query.replace("RelayState=d-1", "RelayState=d-2"))
    with pytest.raises(PermanentDeliveryError, match="does not verify"):
        handler.frontchannel_answer(sp, entry, tampered)
    weak = good.query.replace(
        quote_plus("http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"),
        quote_plus("http://www.w3.org/2000/09/xmldsig#rsa-sha1"),
    )
    sha1 = r"SHA-1 signature algorithm http://www.w3.org/2000/09/xmldsig#rsa-sha1, .*"
    with pytest.raises(PermanentDeliveryError, match=sha1 + "allow_sha1_signatures = true"):
        handler.frontchannel_answer(sp, entry, FrontchannelAnswer("GET", weak))
    with pytest.raises(PermanentDeliveryError, match="repeats"):
        handler.frontchannel_answer(
            sp, entry, FrontchannelAnswer("GET", good.query + "&RelayState=x")
        )


def test_an_unsigned_answer_passes_only_when_signatures_are_not_required(
    handler: SamlHandler, keys: dict[str, KeyPair]
) -> None:
    sp = native_sp(handler, keys, require_signed_responses=False, sp_certificate=None)
    entry = handler.frontchannel_entry(sp, provider_session(), context())
    xml = response_xml(keys, request_id(entry), signer=None)
    handler.frontchannel_answer(sp, entry, posted(xml))
    handler.frontchannel_answer(sp, entry, redirected(xml, None))


def test_hostile_answers(handler: SamlHandler, keys: dict[str, KeyPair]) -> None:
    """Empty, not base64, a DTD, a DEFLATE bomb: refused with a reason, never parsed whole."""
    sp = native_sp(handler, keys)
    entry = handler.frontchannel_entry(sp, provider_session(), context())
    bomb = zlib.compressobj(9, zlib.DEFLATED, -15)
    deflated = bomb.compress(b"<a>" + b" " * 10_000_000 + b"</a>") + bomb.flush()
    cases = {
        "no SAMLResponse": FrontchannelAnswer("POST", "", {}),
        "not base64": FrontchannelAnswer("POST", "", {"SAMLResponse": "!!!"}),
        "DTD": posted(b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>'),
        "byte limit": FrontchannelAnswer(
            "GET", "SAMLResponse=" + quote_plus(base64.b64encode(deflated).decode())
        ),
    }
    for error, answer in cases.items():
        with pytest.raises(PermanentDeliveryError, match=error):
            handler.frontchannel_answer(sp, entry, answer)
