"""pysaml2 7.5 as the SP, configured from our ``saml metadata`` unchanged: it reads our SOAP
LogoutRequest (checking our signature against the metadata's certificate) and answers with
its default signature, RSA-SHA1 with a SHA-1 digest. That answer is refused naming the
algorithm and ``allow_sha1_signatures``, and accepted with the setting."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from saml2 import BINDING_HTTP_POST, BINDING_SOAP
from saml2.client import Saml2Client
from saml2.config import SPConfig

from protocols import BackchannelResponse, ProviderInfo
from protocols.saml import AlgorithmRefusedError, SamlHandler, soap_body
from schemas.errors import PermanentDeliveryError
from tests.saml_support import (
    SP_ENTITY,
    KeyPair,
    context,
    handler_with,
    make_pair,
    provider,
    provider_session,
    soap,
)

SLS = "https://sp.test/saml/sls"
RSA_SHA1 = "http://www.w3.org/2000/09/xmldsig#rsa-sha1"
DS = "{http://www.w3.org/2000/09/xmldsig#}"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, KeyPair]:
    """The IdP's key pair and the SP's."""
    folder = tmp_path_factory.mktemp("keys")
    return {name: make_pair(folder, name) for name in ("idp", "sp")}


@pytest.fixture
def handler(keys: dict[str, KeyPair], tmp_path: Path) -> SamlHandler:
    """The IdP's handler."""
    return handler_with(keys["idp"], tmp_path)


@pytest.fixture
def client(handler: SamlHandler, keys: dict[str, KeyPair], tmp_path: Path) -> Any:
    """pysaml2's SP (``Saml2Client``) trusting our IdP through our metadata file."""
    xmlsec1 = shutil.which("xmlsec1")
    assert xmlsec1 is not None, (
        "xmlsec1 is not installed: ./scripts/test installs Debian's xmlsec1 unless "
        "LOGOUT_TEST_NO_APT=1 (or: apt-get install xmlsec1)"
    )
    metadata = tmp_path / "idp-metadata.xml"
    metadata.write_bytes(handler.metadata())
    config = SPConfig()
    config.load(
        {
            "entityid": SP_ENTITY,
            "key_file": str(keys["sp"].key_path),
            "cert_file": str(keys["sp"].cert_path),
            "xmlsec_binary": xmlsec1,
            "metadata": {"local": [str(metadata)]},
            "service": {
                "sp": {
                    "endpoints": {
                        "single_logout_service": [(SLS, BINDING_SOAP)],
                        "assertion_consumer_service": ["https://sp.test/acs"],
                    },
                }
            },
        }
    )
    return Saml2Client(config=config)


def _sp(handler: SamlHandler, keys: dict[str, KeyPair], **fields: Any) -> ProviderInfo:
    values: dict[str, Any] = {
        "sls_url": SLS,
        "sp_certificate": str(keys["sp"].cert_path),
        "require_signed_responses": True,
        **fields,
    }
    return provider(handler, **values)


def _exchange(handler: SamlHandler, sp: ProviderInfo, client: Any) -> None:
    """Our signed SOAP LogoutRequest to pysaml2, its default-signed answer interpreted."""
    ctx = context()
    request = handler.backchannel_request(sp, provider_session(), ctx)
    # The LogoutRequest as it stands in the envelope, handed over as POST-binding base64:
    # pysaml2's SOAP reader re-serializes the body with ElementTree, which renames the
    # prefixes exclusive C14N signs, so its check fails on signed SOAP messages generally.
    message = etree.tostring(soap_body(etree.fromstring(request.content)))
    received = client.parse_logout_request(  # checks our signature (metadata's certificate)
        base64.b64encode(message).decode(), BINDING_HTTP_POST
    )
    assert received.message.id == request.reference
    answer = client.create_logout_response(received.message, [BINDING_SOAP], sign=True)
    signed = str(answer).encode()
    algorithm = etree.fromstring(signed).find(f"{DS}Signature/{DS}SignedInfo/{DS}SignatureMethod")
    assert algorithm is not None
    assert algorithm.get("Algorithm") == RSA_SHA1, "pysaml2's default is no longer RSA-SHA1"
    response = BackchannelResponse(200, {"content-type": "text/xml"}, soap(signed))
    handler.interpret_response(sp, provider_session(), request, response, ctx)


def test_pysaml2_default_signature_is_refused_naming_the_setting(
    handler: SamlHandler, keys: dict[str, KeyPair], client: Any
) -> None:
    """pysaml2's RSA-SHA1 answer fails permanently, the error naming the algorithm URI and
    the setting that would accept it."""
    with pytest.raises(PermanentDeliveryError) as refused:
        _exchange(handler, _sp(handler, keys), client)
    assert refused.value.detail == (
        f"LogoutResponse's signature uses the SHA-1 signature algorithm {RSA_SHA1}, refused "
        "by default; the provider setting allow_sha1_signatures = true accepts it"
    )
    assert isinstance(refused.value.__cause__, AlgorithmRefusedError)


def test_pysaml2_default_signature_is_accepted_with_the_opt_in(
    handler: SamlHandler, keys: dict[str, KeyPair], client: Any
) -> None:
    """With allow_sha1_signatures = true, pysaml2's answer verifies and the delivery succeeds."""
    _exchange(handler, _sp(handler, keys, allow_sha1_signatures=True), client)
