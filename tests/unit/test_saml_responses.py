"""Reading an SP's SOAP LogoutResponse: every outcome, hostile XML, and signature wrapping.

The responses are built and signed by python3-saml, as an SP built with it would send them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from onelogin.saml2.constants import OneLogin_Saml2_Constants
from onelogin.saml2.settings import OneLogin_Saml2_Settings

from protocols import BackchannelResponse, ProviderInfo
from protocols.saml import (
    DigestMismatchError,
    KeyMismatchError,
    SamlHandler,
    Trust,
    parse_xml,
    read_logout_response,
    verify_enveloped,
)
from protocols.saml.parsing import MessageError
from schemas.errors import PermanentDeliveryError, TransientDeliveryError
from tests.saml_support import (
    KeyPair,
    context,
    handler_with,
    make_pair,
    onelogin_settings,
    provider,
    provider_session,
    sha256_fingerprint,
    soap,
    sp_logout_response,
)

P = "{urn:oasis:names:tc:SAML:2.0:protocol}"
DS = "{http://www.w3.org/2000/09/xmldsig#}"
REQUESTER = OneLogin_Saml2_Constants.STATUS_REQUESTER
PARTIAL_LOGOUT = "urn:oasis:names:tc:SAML:2.0:status:PartialLogout"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, KeyPair]:
    """The IdP's key pair, the SP's, and an attacker's."""
    folder = tmp_path_factory.mktemp("keys")
    return {name: make_pair(folder, name) for name in ("idp", "sp", "attacker")}


@pytest.fixture
def handler(keys: dict[str, KeyPair], tmp_path: Path) -> SamlHandler:
    """The IdP's handler."""
    return handler_with(keys["idp"], tmp_path)


@pytest.fixture
def sp_settings(keys: dict[str, KeyPair]) -> OneLogin_Saml2_Settings:
    """python3-saml's settings of the SP."""
    return onelogin_settings(keys["idp"].cert_pem, "https://sp.test/saml/sls")


def _sp(handler: SamlHandler, keys: dict[str, KeyPair], **fields: Any) -> ProviderInfo:
    """The SP with its certificate and signed responses required, unless ``fields`` say."""
    values: dict[str, Any] = {
        "sp_certificate": str(keys["sp"].cert_path),
        "require_signed_responses": True,
        **fields,
    }
    return provider(handler, **values)


def _outcome(
    handler: SamlHandler,
    sp: ProviderInfo,
    respond: Callable[[str], bytes],
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> Exception | None:
    """Build a request, let ``respond(request ID)`` make the SP's answer, interpret it."""
    ctx = context()
    request = handler.backchannel_request(sp, provider_session(), ctx)
    assert request.reference is not None
    response = BackchannelResponse(
        status, headers or {"content-type": "text/xml"}, respond(request.reference)
    )
    try:
        handler.interpret_response(sp, provider_session(), request, response, ctx)
    except (PermanentDeliveryError, TransientDeliveryError) as exc:
        return exc
    return None


def test_signed_success_succeeds(
    handler: SamlHandler, keys: dict[str, KeyPair], sp_settings: OneLogin_Saml2_Settings
) -> None:
    """A Success response to this request, signed by the SP, ends the delivery well."""
    sp = _sp(handler, keys)
    outcome = _outcome(
        handler, sp, lambda rid: soap(sp_logout_response(sp_settings, rid, signer=keys["sp"]))
    )
    assert outcome is None


def test_unsigned_success_without_requirement(
    handler: SamlHandler, sp_settings: OneLogin_Saml2_Settings
) -> None:
    """Without a certificate or requirement, an unsigned Success is accepted."""
    outcome = _outcome(
        handler, provider(handler), lambda rid: soap(sp_logout_response(sp_settings, rid))
    )
    assert outcome is None


def test_non_success_status_fails_permanently_with_the_codes(
    handler: SamlHandler, keys: dict[str, KeyPair], sp_settings: OneLogin_Saml2_Settings
) -> None:
    """A Requester status is a permanent failure naming the status code."""
    sp = _sp(handler, keys)
    outcome = _outcome(
        handler,
        sp,
        lambda rid: soap(sp_logout_response(sp_settings, rid, status=REQUESTER, signer=keys["sp"])),
    )
    assert isinstance(outcome, PermanentDeliveryError)
    assert outcome.detail == f"LogoutResponse status {REQUESTER}"
    assert outcome.status_code == 200


def test_second_level_status_and_message_are_recorded(
    handler: SamlHandler, keys: dict[str, KeyPair], sp_settings: OneLogin_Saml2_Settings
) -> None:
    """Shibboleth without a session answers Responder / PartialLogout with a message: a
    failure whose error and audit facts carry both codes and the message, whitespace
    collapsed and control or format characters escaped."""

    def respond(rid: str) -> bytes:
        xml = sp_logout_response(
            sp_settings,
            rid,
            status=OneLogin_Saml2_Constants.STATUS_RESPONDER,
            substatus=PARTIAL_LOGOUT,
            status_message="  no session\n for\u202e principal\x9b ",
            signer=keys["sp"],
        )
        return soap(xml)

    outcome = _outcome(handler, _sp(handler, keys), respond)
    assert isinstance(outcome, PermanentDeliveryError)
    codes = [OneLogin_Saml2_Constants.STATUS_RESPONDER, PARTIAL_LOGOUT]
    message = "no session for\\u202e principal\\x9b"
    assert outcome.detail == f"LogoutResponse status {codes[0]} / {codes[1]}: {message}"
    assert outcome.facts == {"sp_status": {"codes": codes, "message": message}}


def test_status_text_is_bounded(handler: SamlHandler, sp_settings: OneLogin_Saml2_Settings) -> None:
    """A huge StatusMessage and deeply nested codes are cut: three codes, 300 characters."""

    def respond(rid: str) -> bytes:
        xml = sp_logout_response(
            sp_settings,
            rid,
            status=OneLogin_Saml2_Constants.STATUS_RESPONDER,
            substatus=PARTIAL_LOGOUT,
            status_message="x" * 5000,
        )
        root = etree.fromstring(xml)
        inner = root.find(f"{P}Status/{P}StatusCode/{P}StatusCode")
        assert inner is not None
        for level in range(4):
            inner = etree.SubElement(inner, f"{P}StatusCode", Value=f"urn:deeper:{level}")
        return soap(etree.tostring(root))

    outcome = _outcome(handler, provider(handler), respond)
    assert isinstance(outcome, PermanentDeliveryError)
    status = outcome.facts["sp_status"]
    assert status["codes"] == [
        OneLogin_Saml2_Constants.STATUS_RESPONDER,
        PARTIAL_LOGOUT,
        "urn:deeper:0",
    ]
    assert status["message"] == "x" * 300 + "... (4700 more characters)"
    assert len(outcome.detail) < 600


def test_missing_signature_fails_when_required(
    handler: SamlHandler, keys: dict[str, KeyPair], sp_settings: OneLogin_Saml2_Settings
) -> None:
    """A required signature that is missing fails permanently, naming the setting."""
    outcome = _outcome(
        handler, _sp(handler, keys), lambda rid: soap(sp_logout_response(sp_settings, rid))
    )
    assert isinstance(outcome, PermanentDeliveryError)
    assert outcome.detail == "LogoutResponse is not signed, and require_signed_responses is set"


@pytest.mark.parametrize("signer", ["attacker", "idp"])
def test_signature_by_another_key_names_both_fingerprints(
    handler: SamlHandler,
    keys: dict[str, KeyPair],
    sp_settings: OneLogin_Saml2_Settings,
    signer: str,
) -> None:
    """A signature made with any other key is a key mismatch: the error names the SHA-256
    fingerprint of the configured certificate and of the one in KeyInfo."""
    sp = _sp(handler, keys)
    outcome = _outcome(
        handler, sp, lambda rid: soap(sp_logout_response(sp_settings, rid, signer=keys[signer]))
    )
    assert isinstance(outcome, PermanentDeliveryError)
    assert isinstance(outcome.__cause__, KeyMismatchError)
    assert outcome.detail == (
        "LogoutResponse's signature does not verify with the SP certificate in sp_certificate "
        f"(SHA-256 fingerprint {sha256_fingerprint(keys['sp'])}); the message's KeyInfo holds "
        f"the certificate with fingerprint {sha256_fingerprint(keys[signer])}"
    )
    assert outcome.__cause__.expected == (sha256_fingerprint(keys["sp"]),)
    assert outcome.__cause__.found == sha256_fingerprint(keys[signer])


def test_key_mismatch_without_key_info_says_so(
    handler: SamlHandler, keys: dict[str, KeyPair], sp_settings: OneLogin_Saml2_Settings
) -> None:
    """A signature by another key with KeyInfo left out: the configured fingerprints are
    named, and the missing certificate said."""

    def respond(rid: str) -> bytes:
        signed = sp_logout_response(sp_settings, rid, signer=keys["attacker"])
        root = etree.fromstring(signed)
        key_info = root.find(f"{DS}Signature/{DS}KeyInfo")
        assert key_info is not None
        key_info.getparent().remove(key_info)  # type: ignore[union-attr]
        return soap(etree.tostring(root))

    outcome = _outcome(handler, _sp(handler, keys), respond)
    assert isinstance(outcome, PermanentDeliveryError)
    assert isinstance(outcome.__cause__, KeyMismatchError)
    assert outcome.__cause__.found is None
    assert outcome.detail.endswith("the message's KeyInfo holds no readable certificate")
    assert sha256_fingerprint(keys["sp"]) in outcome.detail


def test_signature_checked_when_present_even_if_not_required(
    handler: SamlHandler, keys: dict[str, KeyPair], sp_settings: OneLogin_Saml2_Settings
) -> None:
    """With the SP's certificate known, a bad signature fails even without the requirement."""
    sp = _sp(handler, keys, require_signed_responses=False)
    outcome = _outcome(
        handler,
        sp,
        lambda rid: soap(sp_logout_response(sp_settings, rid, signer=keys["attacker"])),
    )
    assert isinstance(outcome, PermanentDeliveryError)
    assert "does not verify" in outcome.detail


def test_tampered_signed_response_fails(
    handler: SamlHandler, keys: dict[str, KeyPair], sp_settings: OneLogin_Saml2_Settings
) -> None:
    """Changing a signed Requester status to Success is a digest mismatch: content altered."""
    sp = _sp(handler, keys)

    def respond(rid: str) -> bytes:
        signed = sp_logout_response(sp_settings, rid, status=REQUESTER, signer=keys["sp"])
        return soap(
            signed.replace(REQUESTER.encode(), OneLogin_Saml2_Constants.STATUS_SUCCESS.encode())
        )

    outcome = _outcome(handler, sp, respond)
    assert isinstance(outcome, PermanentDeliveryError)
    assert isinstance(outcome.__cause__, DigestMismatchError)
    assert outcome.detail == (
        "LogoutResponse was altered after signing: the signature is the SP's "
        "(it verifies with sp_certificate), but the digest of the signed content does not match"
    )


def test_wrong_in_response_to(
    handler: SamlHandler, keys: dict[str, KeyPair], sp_settings: OneLogin_Saml2_Settings
) -> None:
    """A (validly signed) answer to another request fails permanently, naming both IDs."""
    sp = _sp(handler, keys)
    outcome = _outcome(
        handler,
        sp,
        lambda rid: soap(sp_logout_response(sp_settings, "_another", signer=keys["sp"])),
    )
    assert isinstance(outcome, PermanentDeliveryError)
    assert "InResponseTo '_another' is not the request's ID" in outcome.detail


def test_wrong_issuer(handler: SamlHandler, sp_settings: OneLogin_Saml2_Settings) -> None:
    """An answer from another entity fails permanently."""
    sp = provider(handler, entity_id="https://other-sp.test")
    outcome = _outcome(handler, sp, lambda rid: soap(sp_logout_response(sp_settings, rid)))
    assert isinstance(outcome, PermanentDeliveryError)
    assert "Issuer 'https://sp.test/metadata' is not the SP's entity_id" in outcome.detail


BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">]>
<soap11:Envelope xmlns:soap11="http://schemas.xmlsoap.org/soap/envelope/"><soap11:Body>&lol2;
</soap11:Body></soap11:Envelope>"""
EXTERNAL = b"""<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<soap11:Envelope xmlns:soap11="http://schemas.xmlsoap.org/soap/envelope/"><soap11:Body>&x;
</soap11:Body></soap11:Envelope>"""
FAULT = b"""<soap11:Envelope xmlns:soap11="http://schemas.xmlsoap.org/soap/envelope/">
<soap11:Body><soap11:Fault><faultcode>soap11:Server</faultcode><faultstring>database down
</faultstring></soap11:Fault></soap11:Body></soap11:Envelope>"""


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (BOMB, "has a DTD (DOCTYPE), which is never accepted"),
        (EXTERNAL, "has a DTD (DOCTYPE), which is never accepted"),
        (b"<soap11:Envelope", "is not well-formed XML"),
        (b"", "is empty"),
        (b"<html><body>ok</body></html>", "not a SOAP 1.1 envelope"),
        (FAULT, "SOAP fault soap11:Server: database down"),
        (b"x" * 70_000, "over the 65536 byte limit"),
    ],
)
def test_hostile_or_broken_xml_fails_permanently(
    handler: SamlHandler, body: bytes, expected: str
) -> None:
    """DTDs and entities, malformed or oversized XML and SOAP faults: permanent, with a reason."""
    outcome = _outcome(handler, provider(handler), lambda _: body)
    assert isinstance(outcome, PermanentDeliveryError)
    assert expected in outcome.detail, outcome.detail
    assert "lol" not in outcome.detail
    assert "passwd" not in outcome.detail


def test_an_html_page_answered_with_200_is_named(handler: SamlHandler) -> None:
    """An SP's error page (HTML, status 200, as SimpleSAMLphp 1.19.7 answers a SOAP
    LogoutRequest) fails permanently, named as the HTML page it is, not only as a DTD."""
    page = b'<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0//EN" "x.dtd"><html><title>Unhandled'
    headers = {"content-type": "text/html; charset=UTF-8"}
    outcome = _outcome(handler, provider(handler), lambda _: page, headers=headers)
    assert isinstance(outcome, PermanentDeliveryError)
    assert outcome.detail.startswith(
        "the SOAP response is an HTML page (Content-Type: text/html), not a SOAP envelope"
    ), outcome.detail
    assert "has a DTD (DOCTYPE), which is never accepted" in outcome.detail


@pytest.mark.parametrize(
    ("status", "kind", "code"),
    [
        (503, TransientDeliveryError, 503),
        (429, TransientDeliveryError, 429),
        (500, PermanentDeliveryError, 500),
        (404, PermanentDeliveryError, 404),
        (302, PermanentDeliveryError, 302),
        (204, PermanentDeliveryError, 204),
    ],
)
def test_http_statuses_follow_the_shared_classification(
    handler: SamlHandler, status: int, kind: type[Exception], code: int
) -> None:
    """Non-200 answers are classified as for every protocol; 204 carries no LogoutResponse."""
    outcome = _outcome(handler, provider(handler), lambda _: b"", status, {"retry-after": "7"})
    assert type(outcome) is kind
    assert isinstance(outcome, PermanentDeliveryError | TransientDeliveryError)
    assert outcome.status_code == code
    if isinstance(outcome, TransientDeliveryError):
        assert outcome.retry_after == 7.0


# -- signature wrapping -----------------------------------------------------------------


def _signed_response(
    sp_settings: OneLogin_Saml2_Settings, keys: dict[str, KeyPair], rid: str, status: str
) -> etree._Element:
    xml = sp_logout_response(sp_settings, rid, status=status, signer=keys["sp"])
    return parse_xml(xml, limit=65536)


def _read(response: etree._Element, rid: str, keys: dict[str, KeyPair]) -> None:
    sp = provider(
        handler_with(keys["idp"], Path("unused")), sp_certificate=str(keys["sp"].cert_path)
    )
    read_logout_response(
        response,
        request_id=rid,
        sp_entity_id="https://sp.test/metadata",
        trust=sp.settings.trust,
        require_signature=True,
    )


def test_signature_moved_onto_another_response_is_refused(
    keys: dict[str, KeyPair], sp_settings: OneLogin_Saml2_Settings
) -> None:
    """A genuine signed response hidden inside a forged one, the forged one carrying the
    same ID and the genuine signature: the duplicate ID is refused."""
    genuine = _signed_response(sp_settings, keys, "_r1", REQUESTER)
    forged = _signed_response(sp_settings, keys, "_r1", OneLogin_Saml2_Constants.STATUS_SUCCESS)
    forged.remove(forged.find(f"{DS}Signature"))  # type: ignore[arg-type]
    signature = genuine.find(f"{DS}Signature")
    assert signature is not None
    forged.set("ID", genuine.get("ID", ""))
    forged.find("{urn:oasis:names:tc:SAML:2.0:assertion}Issuer").addnext(  # type: ignore[union-attr]
        etree.fromstring(etree.tostring(signature))
    )
    extensions = etree.SubElement(forged, f"{P}Extensions")
    extensions.append(genuine)
    with pytest.raises(MessageError, match="ID appears 2 times"):
        _read(forged, "_r1", keys)


def test_signature_referencing_another_element_is_refused(
    keys: dict[str, KeyPair], sp_settings: OneLogin_Saml2_Settings
) -> None:
    """A signature whose Reference points elsewhere than the response read is refused,
    even though it verifies."""
    forged = _signed_response(sp_settings, keys, "_r2", OneLogin_Saml2_Constants.STATUS_SUCCESS)
    genuine_id = forged.get("ID")
    forged.set("ID", "_forged")
    with pytest.raises(MessageError, match="does not reference the LogoutResponse"):
        _read(forged, "_r2", keys)
    forged.set("ID", genuine_id or "")
    _read(forged, "_r2", keys)  # the untouched response reads fine


def test_signature_not_enveloped_in_the_response_is_not_its_signature(
    keys: dict[str, KeyPair], sp_settings: OneLogin_Saml2_Settings
) -> None:
    """A signature elsewhere in the document does not count for the response read."""
    response = _signed_response(sp_settings, keys, "_r3", OneLogin_Saml2_Constants.STATUS_SUCCESS)
    signature = response.find(f"{DS}Signature")
    assert signature is not None
    response.remove(signature)
    etree.SubElement(response, f"{P}Extensions").append(signature)
    with pytest.raises(MessageError, match="not signed"):
        _read(response, "_r3", keys)


def test_verify_enveloped_requires_a_key(
    keys: dict[str, KeyPair], sp_settings: OneLogin_Saml2_Settings
) -> None:
    """No certificate, no verified signature."""
    response = _signed_response(sp_settings, keys, "_r4", OneLogin_Saml2_Constants.STATUS_SUCCESS)
    with pytest.raises(MessageError, match="no certificate"):
        verify_enveloped(response, Trust())
