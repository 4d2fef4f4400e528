"""SHA-1 from an SP: refused by default, naming the algorithm and the setting that accepts
it; accepted with ``allow_sha1_signatures = true`` over SOAP and on the front-channel return
(HTTP-POST and HTTP-Redirect). The responses are signed by python3-saml (RSA-SHA1 with a
SHA-1 digest, pysaml2's default) or, for the Redirect query, with ``cryptography``."""

from __future__ import annotations

import base64
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from onelogin.saml2.constants import OneLogin_Saml2_Constants as Constants

from orchestrator import InputError
from protocols import BackchannelResponse, FrontchannelAnswer, FrontchannelEntry, ProviderInfo
from protocols.saml import (
    AlgorithmRefusedError,
    DigestMismatchError,
    SamlHandler,
    parse_provider_settings,
)
from protocols.saml.frontchannel import sent_request_id
from schemas.errors import PermanentDeliveryError
from tests.saml_support import (
    KeyPair,
    context,
    handler_with,
    make_pair,
    onelogin_settings,
    provider,
    provider_session,
    soap,
    sp_logout_response,
)

SLS = "https://sp.test/saml/sls"
RSA_SHA1 = "http://www.w3.org/2000/09/xmldsig#rsa-sha1"
SHA1 = "http://www.w3.org/2000/09/xmldsig#sha1"
SHA1_REFUSED = (
    "uses the SHA-1 {kind} algorithm {uri}, refused by default; "
    "the provider setting allow_sha1_signatures = true accepts it"
)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, KeyPair]:
    """The IdP's key pair and the SP's."""
    folder = tmp_path_factory.mktemp("keys")
    return {name: make_pair(folder, name) for name in ("idp", "sp")}


@pytest.fixture
def handler(keys: dict[str, KeyPair], tmp_path: Path) -> SamlHandler:
    """The IdP's handler."""
    return handler_with(keys["idp"], tmp_path)


def _sp(handler: SamlHandler, keys: dict[str, KeyPair], **fields: Any) -> ProviderInfo:
    values: dict[str, Any] = {
        "sp_certificate": str(keys["sp"].cert_path),
        "require_signed_responses": True,
        **fields,
    }
    return provider(handler, **values)


def _response(
    keys: dict[str, KeyPair], rid: str, *, sign: str = RSA_SHA1, digest: str = SHA1
) -> bytes:
    settings = onelogin_settings(keys["idp"].cert_pem, SLS, want_signed=False)
    return sp_logout_response(
        settings, rid, signer=keys["sp"], sign_algorithm=sign, digest_algorithm=digest
    )


def _soap_outcome(
    handler: SamlHandler, sp: ProviderInfo, respond: Any
) -> PermanentDeliveryError | None:
    ctx = context()
    request = handler.backchannel_request(sp, provider_session(), ctx)
    assert request.reference is not None
    answer = BackchannelResponse(200, {"content-type": "text/xml"}, respond(request.reference))
    try:
        handler.interpret_response(sp, provider_session(), request, answer, ctx)
    except PermanentDeliveryError as exc:
        return exc
    return None


def test_rsa_sha1_soap_answer_is_refused_naming_algorithm_and_setting(
    handler: SamlHandler, keys: dict[str, KeyPair]
) -> None:
    """An RSA-SHA1 signed LogoutResponse over SOAP fails permanently by default; the error
    names the signature algorithm URI and the setting that would accept it."""
    outcome = _soap_outcome(handler, _sp(handler, keys), lambda rid: soap(_response(keys, rid)))
    assert isinstance(outcome, PermanentDeliveryError)
    assert outcome.detail == "LogoutResponse's signature " + SHA1_REFUSED.format(
        kind="signature", uri=RSA_SHA1
    )
    cause = outcome.__cause__
    assert isinstance(cause, AlgorithmRefusedError)
    assert (cause.algorithm, cause.setting) == (RSA_SHA1, "allow_sha1_signatures")


def test_rsa_sha1_soap_answer_is_accepted_with_the_opt_in(
    handler: SamlHandler, keys: dict[str, KeyPair]
) -> None:
    """With allow_sha1_signatures = true the same RSA-SHA1/SHA-1 answer is verified and the
    delivery succeeds."""
    sp = _sp(handler, keys, allow_sha1_signatures=True)
    assert _soap_outcome(handler, sp, lambda rid: soap(_response(keys, rid))) is None


def test_sha1_digest_under_a_sha256_signature_is_refused_then_accepted(
    handler: SamlHandler, keys: dict[str, KeyPair]
) -> None:
    """A SHA-1 digest is refused on its own (naming the digest algorithm), and accepted with
    the opt-in."""

    def respond(rid: str) -> bytes:
        return soap(_response(keys, rid, sign=Constants.RSA_SHA256, digest=SHA1))

    outcome = _soap_outcome(handler, _sp(handler, keys), respond)
    assert isinstance(outcome, PermanentDeliveryError)
    assert outcome.detail.endswith(SHA1_REFUSED.format(kind="digest", uri=SHA1))
    sp = _sp(handler, keys, allow_sha1_signatures=True)
    assert _soap_outcome(handler, sp, respond) is None


def test_altered_sha1_answer_is_still_refused_with_the_opt_in(
    handler: SamlHandler, keys: dict[str, KeyPair]
) -> None:
    """The opt-in accepts the algorithm, not altered content: a changed status is a digest
    mismatch."""
    sp = _sp(handler, keys, allow_sha1_signatures=True)

    def respond(rid: str) -> bytes:
        signed = _response(keys, rid)
        return soap(signed.replace(b"Success", b"Requester"))

    outcome = _soap_outcome(handler, sp, respond)
    assert isinstance(outcome, PermanentDeliveryError)
    assert isinstance(outcome.__cause__, DigestMismatchError)


def test_an_algorithm_never_accepted_is_named_without_the_setting(
    handler: SamlHandler, keys: dict[str, KeyPair]
) -> None:
    """A signature method outside RSA/ECDSA with SHA-2 (here DSA-SHA1 named in SignedInfo)
    is refused naming it; no setting accepts it, so none is suggested."""
    dsa = "http://www.w3.org/2000/09/xmldsig#dsa-sha1"

    def respond(rid: str) -> bytes:
        return soap(_response(keys, rid).replace(RSA_SHA1.encode(), dsa.encode()))

    for sp in (_sp(handler, keys), _sp(handler, keys, allow_sha1_signatures=True)):
        outcome = _soap_outcome(handler, sp, respond)
        assert isinstance(outcome, PermanentDeliveryError)
        assert outcome.detail == (
            f"LogoutResponse's signature uses the signature algorithm {dsa}, not accepted "
            "(accepted: RSA or ECDSA with SHA-256, SHA-384 or SHA-512)"
        )
        assert isinstance(outcome.__cause__, AlgorithmRefusedError)
        assert outcome.__cause__.setting is None


def _native(
    handler: SamlHandler, keys: dict[str, KeyPair], binding: str, **fields: Any
) -> tuple[ProviderInfo, FrontchannelEntry]:
    sp = _sp(
        handler,
        keys,
        sls_url=SLS,
        sls_binding=binding,
        logout_method="frontchannel_native",
        **fields,
    )
    entry = handler.frontchannel_entry(sp, provider_session(), context())
    return sp, entry


def _sha1_query(xml: bytes, key: KeyPair, relay_state: str = "d-1") -> str:
    """The Redirect binding's query signed RSA-SHA1, as an SP's SAML library writes it."""
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
    deflated = base64.b64encode(compressor.compress(xml) + compressor.flush()).decode()
    fields = [("SAMLResponse", deflated), ("RelayState", relay_state), ("SigAlg", RSA_SHA1)]
    query = "&".join(f"{name}={quote_plus(value)}" for name, value in fields)
    private = serialization.load_pem_private_key(key.key_pem.encode(), password=None)
    assert isinstance(private, rsa.RSAPrivateKey)
    signature = private.sign(query.encode(), padding.PKCS1v15(), hashes.SHA1())  # noqa: S303
    return query + "&Signature=" + quote_plus(base64.b64encode(signature).decode())


def _unsigned(keys: dict[str, KeyPair], rid: str) -> bytes:
    settings = onelogin_settings(keys["idp"].cert_pem, SLS, want_signed=False)
    return sp_logout_response(settings, rid)


@pytest.mark.parametrize("binding", ["post", "redirect"])
def test_front_channel_sha1_answer_refused_then_accepted(
    handler: SamlHandler, keys: dict[str, KeyPair], binding: str
) -> None:
    """On the front-channel return, an RSA-SHA1 signed answer (enveloped for HTTP-POST, over
    the query for HTTP-Redirect) is refused naming the algorithm and the setting, and
    accepted with allow_sha1_signatures = true."""
    for allow in (False, True):
        sp, entry = _native(handler, keys, binding, allow_sha1_signatures=allow)
        rid = sent_request_id(entry, limit=65536)
        if binding == "post":
            value = base64.b64encode(_response(keys, rid)).decode()
            answer = FrontchannelAnswer("POST", "", {"SAMLResponse": value, "RelayState": "d-1"})
            what = "LogoutResponse's signature "
        else:
            answer = FrontchannelAnswer("GET", _sha1_query(_unsigned(keys, rid), keys["sp"]))
            what = "the query signature "
        if allow:
            handler.frontchannel_answer(sp, entry, answer)
            continue
        with pytest.raises(PermanentDeliveryError) as refused:
            handler.frontchannel_answer(sp, entry, answer)
        assert refused.value.detail == what + SHA1_REFUSED.format(kind="signature", uri=RSA_SHA1)


def test_the_opt_in_needs_a_certificate_and_a_boolean() -> None:
    """allow_sha1_signatures is checked on load: without sp_certificate it could verify
    nothing, and it must be a boolean."""
    table = {"entity_id": "https://sp.test", "sls_url": SLS, "sls_binding": "soap"}
    with pytest.raises(InputError) as missing:
        parse_provider_settings("payroll", {**table, "allow_sha1_signatures": True})
    assert "sp_certificate: required by allow_sha1_signatures = true" in str(missing.value)
    assert "payroll" in str(missing.value)
    with pytest.raises(InputError) as wrong:
        parse_provider_settings("payroll", {**table, "allow_sha1_signatures": "maybe"})
    assert "allow_sha1_signatures" in str(wrong.value)
    assert parse_provider_settings("payroll", table).allow_sha1_signatures is False
