"""LogoutRequests and the IdP's LogoutResponse on every binding, each signature checked by an
independent implementation: the xmlsec1 command (XML signatures) and python3-saml as the SP
(HTTP-Redirect query signatures, and the messages' own checks)."""

from __future__ import annotations

import base64
import zlib
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from lxml import etree
from onelogin.saml2.auth import OneLogin_Saml2_Auth
from onelogin.saml2.logout_request import OneLogin_Saml2_Logout_Request
from onelogin.saml2.xml_utils import OneLogin_Saml2_XML

from protocols import Channel, ProviderSessionInfo
from protocols.saml import MAX_RELAY_STATE, REASONS, SamlHandler, redirect_url
from protocols.saml.uris import SOAP_ACTION
from schemas import EVENT_TYPES
from schemas.errors import PermanentDeliveryError
from tests.saml_support import (
    EMAIL_FORMAT,
    IDP_ENTITY,
    LOGOUT_REQUEST,
    LOGOUT_RESPONSE,
    SP_ENTITY,
    KeyPair,
    context,
    handler_with,
    make_pair,
    onelogin_settings,
    provider,
    provider_session,
    xmlsec1_verify,
)

P = "{urn:oasis:names:tc:SAML:2.0:protocol}"
A = "{urn:oasis:names:tc:SAML:2.0:assertion}"
DS = "{http://www.w3.org/2000/09/xmldsig#}"
SLS = "https://sp.test/saml/sls"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[KeyPair, KeyPair]:
    """The IdP's key pair and an unrelated one (the wrong key)."""
    folder = tmp_path_factory.mktemp("keys")
    return make_pair(folder, "idp"), make_pair(folder, "other")


@pytest.fixture
def handler(keys: tuple[KeyPair, KeyPair], tmp_path: Path) -> SamlHandler:
    """A handler whose IdP signs with the ``idp`` pair."""
    return handler_with(keys[0], tmp_path)


def _request_in(envelope: bytes) -> etree._Element:
    (request,) = etree.fromstring(envelope).iter(f"{P}LogoutRequest")
    return request


def _query(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True, strict_parsing=True))


def _inflate(value: str) -> bytes:
    return zlib.decompress(base64.b64decode(value, validate=True), -15)


def _slo(url: str, idp_cert: str, query: dict[str, str]) -> OneLogin_Saml2_Auth:
    """python3-saml's SP processing a Redirect-binding LogoutRequest at ``url``."""
    parts = urlsplit(url)
    request_data: dict[str, Any] = {
        "https": "on",
        "http_host": parts.netloc,
        "script_name": parts.path,
        "get_data": query,
    }
    auth = OneLogin_Saml2_Auth(request_data, onelogin_settings(idp_cert, SLS))
    auth.process_slo(keep_local_session=True)
    return auth


# -- the SOAP request ---------------------------------------------------------------------


def test_soap_request_is_signed_as_xmlsec1_verifies(
    handler: SamlHandler, keys: tuple[KeyPair, KeyPair], tmp_path: Path
) -> None:
    """The SOAP body's LogoutRequest verifies with xmlsec1; tampered or wrong-key copies fail."""
    idp, other = keys
    request = handler.backchannel_request(provider(handler), provider_session(), context())
    assert request.url == "https://sp.test/saml/sls"
    assert request.method == "POST"
    assert request.headers["Content-Type"] == "text/xml; charset=utf-8"
    assert request.headers["SOAPAction"] == f'"{SOAP_ACTION}"'
    ok, output = xmlsec1_verify(request.content, idp.cert_path, LOGOUT_REQUEST, tmp_path)
    assert ok, output
    tampered = request.content.replace(b"alice@example.com", b"mallory@example.com")
    assert tampered != request.content
    assert not xmlsec1_verify(tampered, idp.cert_path, LOGOUT_REQUEST, tmp_path)[0]
    assert not xmlsec1_verify(request.content, other.cert_path, LOGOUT_REQUEST, tmp_path)[0]


def test_request_content_and_signature_layout(handler: SamlHandler) -> None:
    """Every attribute the profile asks for, the NameID echoed exactly, the signature's shape."""
    ctx = context()
    session = provider_session(name_qualifier="https://idp.test/ns")
    sent = handler.backchannel_request(provider(handler), session, ctx)
    envelope = etree.fromstring(sent.content)
    assert envelope.tag == "{http://schemas.xmlsoap.org/soap/envelope/}Envelope"
    request = _request_in(sent.content)
    assert request.get("ID") == sent.reference
    assert request.get("Version") == "2.0"
    assert request.get("Destination") == "https://sp.test/saml/sls"
    assert request.get("Reason") == "urn:oasis:names:tc:SAML:2.0:logout:user"
    issued = datetime.fromisoformat(request.get("IssueInstant", ""))
    expires = datetime.fromisoformat(request.get("NotOnOrAfter", ""))
    assert abs((issued - ctx.now).total_seconds()) < 1
    assert expires - issued == timedelta(seconds=120)
    children = [child.tag for child in request]
    assert children == [f"{A}Issuer", f"{DS}Signature", f"{A}NameID", f"{P}SessionIndex"]
    assert request.findtext(f"{A}Issuer") == IDP_ENTITY
    name_id = request.find(f"{A}NameID")
    assert name_id is not None
    assert (name_id.text, dict(name_id.attrib)) == (
        "alice@example.com",
        {
            "Format": EMAIL_FORMAT,
            "NameQualifier": "https://idp.test/ns",
            "SPNameQualifier": SP_ENTITY,
        },
    )
    assert request.findtext(f"{P}SessionIndex") == "_session-7"
    info = f"{DS}Signature/{DS}SignedInfo/"
    assert request.find(f"{info}{DS}CanonicalizationMethod").get("Algorithm") == (  # type: ignore[union-attr]
        "http://www.w3.org/2001/10/xml-exc-c14n#"
    )
    assert request.find(f"{info}{DS}SignatureMethod").get("Algorithm") == (  # type: ignore[union-attr]
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
    )
    reference = request.find(f"{info}{DS}Reference")
    assert reference is not None
    assert reference.get("URI") == f"#{sent.reference}"
    assert reference.find(f"{DS}DigestMethod").get("Algorithm") == (  # type: ignore[union-attr]
        "http://www.w3.org/2001/04/xmlenc#sha256"
    )
    schema_ok = OneLogin_Saml2_XML.validate_xml(
        etree.tostring(request), "saml-schema-protocol-2.0.xsd"
    )
    assert not isinstance(schema_ok, str), schema_ok


def test_fresh_id_per_attempt(handler: SamlHandler) -> None:
    """Each attempt is a new message: a new ID, never reused."""
    sp, session = provider(handler), provider_session()
    ids = {handler.backchannel_request(sp, session, context(attempt=n)).reference for n in range(5)}
    assert len(ids) == 5
    assert all(i and i.startswith("_") and len(i) == 41 for i in ids)


def test_optional_identifiers_are_left_out(handler: SamlHandler) -> None:
    """A NameID without qualifiers, and no SessionIndex, stay absent (never empty)."""
    session = provider_session(
        name_id_format=None, sp_name_qualifier=None, name_qualifier=None, session_index=None
    )
    request = _request_in(
        handler.backchannel_request(provider(handler), session, context()).content
    )
    name_id = request.find(f"{A}NameID")
    assert name_id is not None
    assert dict(name_id.attrib) == {}
    assert request.find(f"{P}SessionIndex") is None


def test_no_name_id_fails_permanently(handler: SamlHandler) -> None:
    """A provider session without a NameID cannot be logged out by SAML."""
    with pytest.raises(PermanentDeliveryError, match="no name_id"):
        handler.backchannel_request(provider(handler), provider_session(name_id=None), context())


def test_another_protocols_identifiers_fail_that_delivery(handler: SamlHandler) -> None:
    """OIDC identifiers left on a provider that now speaks SAML fail permanently, naming the
    field and never its value (not pydantic's ValidationError, which would end the batch)."""
    session = ProviderSessionInfo(7, "s-1", "alice", "sp", {"sid": "secret-sid"})
    with pytest.raises(PermanentDeliveryError) as caught:
        handler.backchannel_request(provider(handler), session, context())
    detail = caught.value.detail
    assert "sid: not one of its identifiers" in detail
    assert "protocol 'saml'" in detail
    assert "secret-sid" not in detail


#: The reason each event that ends sessions gives (SAML Core §3.7.3.2).
EXPECTED_REASONS = {
    "logout.user": "user",
    "logout.provider": "user",
    "session.revoke": "admin",
    "user.revoke_all": "admin",
    "session.terminate_others": "admin",
    "session.binding_violation": "admin",
    "session.expired": "global-timeout",
}


@pytest.mark.parametrize(("event_type", "expected"), EXPECTED_REASONS.items())
def test_reason_follows_the_event(handler: SamlHandler, event_type: str, expected: str) -> None:
    """user for logouts, admin for revocations and policy, global-timeout for expiry."""
    assert event_type in EVENT_TYPES
    sent = handler.backchannel_request(provider(handler), provider_session(), context(event_type))
    reason = _request_in(sent.content).get("Reason")
    assert reason == f"urn:oasis:names:tc:SAML:2.0:logout:{expected}"
    assert REASONS[event_type] == reason


def test_no_reason_for_an_unknown_event_type(handler: SamlHandler) -> None:
    """An event type this version does not map gets no Reason rather than a wrong one."""
    sent = handler.backchannel_request(provider(handler), provider_session(), context("x.y"))
    assert "Reason" not in _request_in(sent.content).attrib


def test_unsigned_when_sign_requests_is_false(handler: SamlHandler) -> None:
    """sign_requests = false sends the request without a signature."""
    sp = provider(handler, sign_requests=False)
    request = _request_in(handler.backchannel_request(sp, provider_session(), context()).content)
    assert request.find(f"{DS}Signature") is None


def test_lifetime_is_a_setting(keys: tuple[KeyPair, KeyPair], tmp_path: Path) -> None:
    """NotOnOrAfter is request_lifetime seconds after IssueInstant."""
    handler = handler_with(keys[0], tmp_path, request_lifetime=600)
    request = _request_in(
        handler.backchannel_request(provider(handler), provider_session(), context()).content
    )
    issued = datetime.fromisoformat(request.get("IssueInstant", ""))
    assert datetime.fromisoformat(request.get("NotOnOrAfter", "")) - issued == timedelta(minutes=10)


def test_front_channel_provider_has_no_backchannel_request(handler: SamlHandler) -> None:
    """A redirect-binding SP is never sent a SOAP request."""
    sp = provider(handler, sls_binding="redirect")
    with pytest.raises(PermanentDeliveryError, match="not sent over SOAP"):
        handler.backchannel_request(sp, provider_session(), context())


# -- HTTP-Redirect ------------------------------------------------------------------------


def test_iframe_redirect_url_is_accepted_by_python3_saml(
    handler: SamlHandler, keys: tuple[KeyPair, KeyPair]
) -> None:
    """python3-saml's SP accepts the signed redirect URL; altered or wrong-key ones it refuses."""
    idp, other = keys
    sp = provider(handler, sls_binding="redirect", sls_url=f"{SLS}?tenant=a%20b")
    assert handler.channel(sp) is Channel.FRONTCHANNEL_IFRAME
    ctx = context()
    entry = handler.frontchannel_entry(sp, provider_session(), ctx)
    assert (entry.binding, entry.channel, entry.protocol) == ("iframe", sp.settings.method, "saml")
    assert entry.url.startswith(f"{SLS}?tenant=a%20b&SAMLRequest=")
    query = _query(entry.url)
    assert list(query) == ["tenant", "SAMLRequest", "RelayState", "SigAlg", "Signature"]
    assert query["RelayState"] == ctx.delivery_id
    assert query["SigAlg"] == "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
    xml = _inflate(query["SAMLRequest"])
    assert b"Signature" not in xml, "the Redirect binding carries no XML signature"
    request = etree.fromstring(xml)
    assert request.get("Destination") == sp.settings.sls_url
    assert OneLogin_Saml2_Logout_Request.get_nameid(xml.decode()) == "alice@example.com"
    assert OneLogin_Saml2_Logout_Request.get_session_indexes(xml.decode()) == ["_session-7"]

    saml_query = {k: v for k, v in query.items() if k != "tenant"}
    accepted = _slo(SLS, idp.cert_pem, saml_query)
    assert accepted.get_errors() == [], accepted.get_last_error_reason()
    for changed in ({"RelayState": "other"}, {"Signature": query["Signature"][:-6] + "AAAAA="}):
        refused = _slo(SLS, idp.cert_pem, {**saml_query, **changed})
        assert "invalid_logout_request_signature" in refused.get_errors()
    wrong_key = _slo(SLS, other.cert_pem, saml_query)
    assert "invalid_logout_request_signature" in wrong_key.get_errors()
    unsigned = _slo(SLS, idp.cert_pem, {k: v for k, v in saml_query.items() if k != "Signature"})
    assert unsigned.get_errors(), "python3-saml accepted an unsigned request it requires signed"


def test_native_redirect_is_a_top_level_redirect(handler: SamlHandler) -> None:
    """frontchannel_native with the redirect binding: the same signed URL, binding redirect."""
    sp = provider(handler, sls_binding="redirect", logout_method="frontchannel_native")
    entry = handler.frontchannel_entry(sp, provider_session(), context())
    assert (entry.binding, entry.channel) == ("redirect", Channel.FRONTCHANNEL_NATIVE)
    assert list(_query(entry.url)) == ["SAMLRequest", "RelayState", "SigAlg", "Signature"]


def test_unsigned_redirect_has_no_sigalg(handler: SamlHandler) -> None:
    """sign_requests = false: no SigAlg, no Signature."""
    sp = provider(handler, sls_binding="redirect", sign_requests=False)
    entry = handler.frontchannel_entry(sp, provider_session(), context())
    assert list(_query(entry.url)) == ["SAMLRequest", "RelayState"]


def test_relay_state_is_capped(handler: SamlHandler) -> None:
    """RelayState over 80 bytes is refused; the SAML parameters in sls_url are replaced."""
    request = handler.logout_request(provider(handler), provider_session(), context())
    with pytest.raises(ValueError, match="RelayState"):
        redirect_url(SLS, request.element, relay_state="é" * (MAX_RELAY_STATE // 2 + 1))
    url = redirect_url(f"{SLS}?SAMLRequest=old&x=1", request.element, relay_state="r")
    assert list(_query(url)) == ["x", "SAMLRequest", "RelayState"]


# -- HTTP-POST ----------------------------------------------------------------------------


def test_native_post_form_values(
    handler: SamlHandler, keys: tuple[KeyPair, KeyPair], tmp_path: Path
) -> None:
    """The POST entry: the form action, base64 of the signed XML (xmlsec1 verifies), RelayState."""
    idp, other = keys
    sp = provider(handler, sls_binding="post")
    assert handler.channel(sp) is Channel.FRONTCHANNEL_NATIVE
    ctx = context()
    entry = handler.frontchannel_entry(sp, provider_session(), ctx)
    assert (entry.binding, entry.url, entry.form["RelayState"]) == ("post", SLS, ctx.delivery_id)
    xml = base64.b64decode(entry.form["SAMLRequest"], validate=True)
    assert etree.fromstring(xml).get("Destination") == entry.url
    assert xmlsec1_verify(xml, idp.cert_path, LOGOUT_REQUEST, tmp_path)[0]
    assert not xmlsec1_verify(xml, other.cert_path, LOGOUT_REQUEST, tmp_path)[0]
    tampered = xml.replace(b"_session-7", b"_session-8")
    assert not xmlsec1_verify(tampered, idp.cert_path, LOGOUT_REQUEST, tmp_path)[0]


def test_backchannel_provider_has_no_frontchannel_entry(handler: SamlHandler) -> None:
    """A SOAP SP is logged out by the worker, never in the browser."""
    with pytest.raises(PermanentDeliveryError, match="over SOAP"):
        handler.frontchannel_entry(provider(handler), provider_session(), context())


# -- the IdP's own LogoutResponse ---------------------------------------------------------


@pytest.mark.parametrize("partial", [False, True])
def test_idp_logout_response_by_post(
    handler: SamlHandler, keys: tuple[KeyPair, KeyPair], tmp_path: Path, partial: bool
) -> None:
    """Success, with PartialLogout when a participant failed; signed as xmlsec1 verifies."""
    idp, other = keys
    sp = provider(handler, sls_binding="post")
    entry = handler.logout_response_entry(
        sp, in_response_to="_sp-request-1", partial=partial, relay_state="back", now=context().now
    )
    assert (entry.binding, entry.url, entry.form["RelayState"]) == ("post", SLS, "back")
    assert set(entry.form) == {"SAMLResponse", "RelayState"}
    xml = base64.b64decode(entry.form["SAMLResponse"])
    assert xmlsec1_verify(xml, idp.cert_path, LOGOUT_RESPONSE, tmp_path)[0]
    assert not xmlsec1_verify(xml, other.cert_path, LOGOUT_RESPONSE, tmp_path)[0]
    response = etree.fromstring(xml)
    assert response.get("InResponseTo") == "_sp-request-1"
    assert response.get("Destination") == SLS
    codes = [code.get("Value") for code in response.iter(f"{P}StatusCode")]
    expected = ["urn:oasis:names:tc:SAML:2.0:status:Success"]
    if partial:
        expected.append("urn:oasis:names:tc:SAML:2.0:status:PartialLogout")
    assert codes == expected
    schema_ok = OneLogin_Saml2_XML.validate_xml(xml, "saml-schema-protocol-2.0.xsd")
    assert not isinstance(schema_ok, str), schema_ok


def test_idp_logout_response_by_redirect_is_accepted_by_python3_saml(
    handler: SamlHandler, keys: tuple[KeyPair, KeyPair]
) -> None:
    """python3-saml's SP, awaiting the answer to its request, accepts our signed response."""
    idp, other = keys
    sp = provider(handler, sls_binding="redirect")
    entry = handler.logout_response_entry(
        sp, in_response_to="_sp-request-2", partial=True, relay_state=None, now=context().now
    )
    assert entry.binding == "redirect"
    query = _query(entry.url)
    assert list(query) == ["SAMLResponse", "SigAlg", "Signature"]
    parts = urlsplit(SLS)
    for cert, accepted in ((idp.cert_pem, True), (other.cert_pem, False)):
        request_data = {
            "https": "on",
            "http_host": parts.netloc,
            "script_name": parts.path,
            "get_data": query,
        }
        auth = OneLogin_Saml2_Auth(request_data, onelogin_settings(cert, SLS))
        auth.process_slo(keep_local_session=True, request_id="_sp-request-2")
        assert (auth.get_errors() == []) is accepted, auth.get_last_error_reason()


def test_idp_logout_response_not_for_soap_sps(handler: SamlHandler) -> None:
    """A SOAP SP gets its answer on the SOAP connection, not as a browser entry."""
    with pytest.raises(ValueError, match="SOAP"):
        handler.logout_response_entry(
            provider(handler),
            in_response_to="_x",
            partial=False,
            relay_state=None,
            now=context().now,
        )
