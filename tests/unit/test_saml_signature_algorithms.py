"""Every algorithm ``saml metadata`` advertises is accepted on an SP's LogoutResponse, and a
refusal of an RSA or ECDSA signature tells a key mismatch from altered content. The
responses are built by python3-saml and signed with python-xmlsec directly (RSA and EC
keys), as an SP honouring our metadata would sign them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import xmlsec
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from lxml import etree

from protocols.saml import (
    DigestMismatchError,
    KeyMismatchError,
    SamlHandler,
    parse_xml,
    read_logout_response,
)
from tests.saml_support import (
    SP_ENTITY,
    KeyPair,
    handler_with,
    make_pair,
    onelogin_settings,
    provider,
    sp_logout_response,
)

ALG = "{urn:oasis:names:tc:SAML:metadata:algsupport}"
A = "{urn:oasis:names:tc:SAML:2.0:assertion}"
_C = xmlsec.constants
_TRANSFORMS = {
    t.href: t
    for t in (
        _C.TransformRsaSha256,
        _C.TransformRsaSha384,
        _C.TransformRsaSha512,
        _C.TransformEcdsaSha256,
        _C.TransformEcdsaSha384,
        _C.TransformEcdsaSha512,
        _C.TransformSha256,
        _C.TransformSha384,
        _C.TransformSha512,
    )
}


@pytest.fixture(scope="module")
def rsa_pair(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    """An SP's RSA key pair."""
    return make_pair(tmp_path_factory.mktemp("rsa"), "sp")


@pytest.fixture(scope="module")
def ec_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """An SP's P-256 key and self-signed certificate, as PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ec sp")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return key_pem, cert.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture(scope="module")
def advertised(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], list[str]]:
    """The signing and digest methods our metadata advertises."""
    folder = tmp_path_factory.mktemp("idp")
    handler = handler_with(make_pair(folder, "idp"), folder)
    root = etree.fromstring(handler.metadata())
    return (
        [e.get("Algorithm", "") for e in root.iter(f"{ALG}SigningMethod")],
        [e.get("Algorithm", "") for e in root.iter(f"{ALG}DigestMethod")],
    )


def _signed(key_pem: str, cert_pem: str, signing: str, digest: str) -> etree._Element:
    """python3-saml's LogoutResponse to ``_r1``, signed enveloped after Issuer, as parsed."""
    settings = onelogin_settings(cert_pem, "https://sp.test/saml/sls", want_signed=False)
    root = parse_xml(sp_logout_response(settings, "_r1"), limit=65536)
    signature = xmlsec.template.create(root, _C.TransformExclC14N, _TRANSFORMS[signing])
    issuer = root.find(f"{A}Issuer")
    assert issuer is not None
    issuer.addnext(signature)
    reference = xmlsec.template.add_reference(
        signature, _TRANSFORMS[digest], uri=f"#{root.get('ID')}"
    )
    xmlsec.template.add_transform(reference, _C.TransformEnveloped)
    xmlsec.template.add_transform(reference, _C.TransformExclC14N)
    xmlsec.template.add_x509_data(xmlsec.template.ensure_key_info(signature))
    key = xmlsec.Key.from_memory(key_pem.encode(), _C.KeyDataFormatPem)
    key.load_cert_from_memory(cert_pem.encode(), _C.KeyDataFormatCertPem)
    context = xmlsec.SignatureContext()
    context.key = key
    context.register_id(root, "ID")
    context.sign(signature)
    return parse_xml(etree.tostring(root), limit=65536)  # as received: sent, then parsed


def _read(handler: SamlHandler, cert_pem: str, response: etree._Element) -> None:
    sp = provider(handler, sp_certificate=cert_pem, require_signed_responses=True)
    read_logout_response(
        response,
        request_id="_r1",
        sp_entity_id=SP_ENTITY,
        trust=sp.settings.trust,
        require_signature=True,
    )


def test_every_advertised_algorithm_is_accepted(
    advertised: tuple[list[str], list[str]],
    rsa_pair: KeyPair,
    ec_pair: tuple[str, str],
    tmp_path: Path,
) -> None:
    """Each SigningMethod of our metadata (with each DigestMethod) verifies on a response:
    RSA methods with an RSA key, ECDSA ones with a P-256 key."""
    signing_methods, digests = advertised
    assert len(signing_methods) == 6
    assert len(digests) == 3
    handler = handler_with(make_pair(tmp_path, "idp"), tmp_path)
    for signing in signing_methods:
        key_pem, cert_pem = (
            ec_pair if "#ecdsa-" in signing else (rsa_pair.key_pem, rsa_pair.cert_pem)
        )
        for digest in digests:
            _read(handler, cert_pem, _signed(key_pem, cert_pem, signing, digest))


@pytest.mark.parametrize("curve", [False, True])
def test_key_mismatch_and_altered_content_told_apart(
    rsa_pair: KeyPair, ec_pair: tuple[str, str], tmp_path: Path, curve: bool
) -> None:
    """For RSA and ECDSA alike: the right key over altered content is a digest mismatch; a
    certificate that is not the SP's is a key mismatch."""
    handler = handler_with(make_pair(tmp_path, "idp"), tmp_path)
    key_pem, cert_pem = ec_pair if curve else (rsa_pair.key_pem, rsa_pair.cert_pem)
    signing = _C.TransformEcdsaSha256.href if curve else _C.TransformRsaSha256.href
    response = _signed(key_pem, cert_pem, signing, _C.TransformSha256.href)
    response.set("InResponseTo", "_r2")
    with pytest.raises(DigestMismatchError, match="LogoutResponse was altered after signing"):
        _read(handler, cert_pem, response)
    response.set("InResponseTo", "_r1")
    _read(handler, cert_pem, response)  # as signed, it verifies
    other = make_pair(tmp_path, "other")
    with pytest.raises(KeyMismatchError) as mismatch:
        _read(handler, other.cert_pem, response)
    assert mismatch.value.found is not None
    assert mismatch.value.found not in mismatch.value.expected
