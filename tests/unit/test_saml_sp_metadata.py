"""Reading an SP's SAML metadata into its provider settings (``metadata_file``, ``metadata``).

The fixtures in ``tests/sp_metadata/`` are shaped like what Shibboleth SP 3
(``/Shibboleth.sso/Metadata``) and SimpleSAMLphp (``default-sp``) hand out, and like a
federation's aggregate (``EntitiesDescriptor``) holding an IdP and both SPs.
"""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from orchestrator import InputError
from orchestrator.providers_file import check_providers
from protocols.saml import (
    SamlHandler,
    SamlProviderSettings,
    SlsBinding,
    parse_provider_settings,
    self_signed,
)
from protocols.saml.parsing import MessageError
from protocols.saml.settings import load_certificates
from protocols.saml.sp_metadata import read_sp_metadata
from tests.saml_support import KeyPair, handler_with, make_pair, sign_metadata

FIXTURES = Path(__file__).parent.parent / "sp_metadata"
SHIBBOLETH = FIXTURES / "shibboleth-sp3.xml"
SIMPLESAMLPHP = FIXTURES / "simplesamlphp-sp.xml"
FEDERATION = FIXTURES / "federation.xml"
SHIB_ENTITY = "https://sp.example.org/shibboleth"
SSP_ENTITY = "https://app.example.com/simplesaml/module.php/saml/sp/metadata.php/default-sp"
NOW = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    return make_pair(tmp_path_factory.mktemp("signer"), "federation")


def _problems(settings: dict[str, Any]) -> list[str]:
    with pytest.raises(InputError) as caught:
        parse_provider_settings("sp", settings)
    return [str(p) for p in caught.value.problems]


def _x509(path: Path) -> list[str]:
    """The base64 of each ds:X509Certificate of a fixture, whitespace removed."""
    found = re.findall(r"<ds:X509Certificate>(.*?)</ds:X509Certificate>", path.read_text(), re.S)
    return ["".join(text.split()) for text in found]


def _b64(pem: str) -> str:
    return "".join(pem.strip().splitlines()[1:-1])


def test_shibboleth_sp3_metadata_fills_the_settings() -> None:
    """Shibboleth SP 3: entityID, SOAP chosen, every usable SLO endpoint kept (Artifact
    skipped), both signing certificates (not the encryption one), the algsupport lists."""
    sp = parse_provider_settings("shib", {"metadata_file": str(SHIBBOLETH)})
    assert sp.entity_id == SHIB_ENTITY
    assert (sp.sls_url, sp.sls_binding) == (
        "https://sp.example.org/Shibboleth.sso/SLO/SOAP",
        SlsBinding.SOAP,
    )
    assert [(e.binding.value, e.location.rsplit("/", 1)[1]) for e in sp.slo_endpoints] == [
        ("soap", "SOAP"),
        ("redirect", "Redirect"),
        ("post", "POST"),
    ]
    signing, newer, encryption = _x509(SHIBBOLETH)
    assert sp.sp_certificate is not None
    stored = [
        _b64(c)
        for c in re.findall(r"-----BEGIN.*?-----END CERTIFICATE-----", sp.sp_certificate, re.S)
    ]
    assert stored == [signing, newer]
    assert encryption not in stored
    assert len(sp.trust.certificates) == 2
    algorithms = sp.advertised_algorithms
    assert algorithms is not None
    assert algorithms.signing[0] == "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512"
    assert "http://www.w3.org/2000/09/xmldsig#rsa-sha1" in algorithms.signing
    assert len(algorithms.signing) == 11
    assert len(algorithms.digest) == 5


def test_simplesamlphp_metadata_gives_a_redirect_endpoint() -> None:
    """SimpleSAMLphp: its only SLO endpoint is HTTP-Redirect, so the iframe front-channel;
    the one certificate used for signing and encryption is stored once; no algorithms."""
    sp = parse_provider_settings("ssp", {"metadata": SIMPLESAMLPHP.read_text()})
    assert sp.entity_id == SSP_ENTITY
    assert sp.sls_binding is SlsBinding.REDIRECT
    assert sp.method.value == "frontchannel_iframe"
    assert sp.sls_url.endswith("/saml2-logout.php/default-sp")
    assert sp.sp_certificate is not None
    assert len(load_certificates(sp.sp_certificate)) == 1
    assert sp.advertised_algorithms is None


def test_the_stored_settings_load_again_without_the_file(tmp_path: Path) -> None:
    """What providers load stores is the result, never the file: workers re-read it alike."""
    copy = tmp_path / "sp.xml"
    copy.write_bytes(SHIBBOLETH.read_bytes())
    sp = parse_provider_settings("shib", {"metadata_file": str(copy), "sign_requests": False})
    stored = sp.model_dump(mode="json")
    assert not {"metadata_file", "metadata", "metadata_signed_by"} & stored.keys()
    copy.unlink()
    assert parse_provider_settings("shib", stored) == sp


def test_a_federation_aggregate_needs_entity_id_to_choose() -> None:
    """In an EntitiesDescriptor of several SPs, entity_id picks one; without it, or with one
    the document lacks, the problem lists what it holds."""
    (problem,) = _problems({"metadata_file": str(FEDERATION)})
    assert problem.startswith(f"provider 'sp': metadata_file: {FEDERATION} holds 2 service")
    assert SHIB_ENTITY in problem
    assert SSP_ENTITY in problem
    assert "set entity_id" in problem
    sp = parse_provider_settings("sp", {"metadata_file": str(FEDERATION), "entity_id": SSP_ENTITY})
    assert sp.sls_binding is SlsBinding.REDIRECT
    (missing,) = _problems({"metadata_file": str(FEDERATION), "entity_id": "https://x.test"})
    assert "holds no service provider 'https://x.test'" in missing
    idp = "https://idp.example.org/idp/shibboleth"
    assert (
        "no service provider" in _problems({"metadata_file": str(FEDERATION), "entity_id": idp})[0]
    )


def test_explicit_fields_win_and_entity_id_must_agree(pair_cert: KeyPair) -> None:
    """The entry's sls_url, sls_binding and sp_certificate are kept over the metadata's; an
    entity_id the metadata does not describe is a conflict, refused."""
    sp = parse_provider_settings(
        "shib",
        {
            "metadata_file": str(SHIBBOLETH),
            "sls_url": "https://shib.internal/Shibboleth.sso/SLO/SOAP",
            "sls_binding": "soap",
            "sp_certificate": pair_cert.cert_pem,
        },
    )
    assert sp.sls_url == "https://shib.internal/Shibboleth.sso/SLO/SOAP"
    assert sp.sp_certificate is not None
    assert _b64(sp.sp_certificate) == _b64(pair_cert.cert_pem)
    assert len(sp.slo_endpoints) == 3
    (conflict,) = _problems({"metadata_file": str(SHIBBOLETH), "entity_id": "https://other"})
    assert f"describes '{SHIB_ENTITY}', not entity_id 'https://other'" in conflict


@pytest.fixture(scope="module")
def pair_cert(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    return make_pair(tmp_path_factory.mktemp("explicit"), "explicit")


def test_binding_and_method_choose_the_endpoint() -> None:
    """sls_binding or logout_method pick among the metadata's endpoints; an sls_url of the
    metadata takes its binding; a choice it cannot serve names the field and what it lists."""
    post = parse_provider_settings("s", {"metadata_file": str(SHIBBOLETH), "sls_binding": "post"})
    assert post.sls_url.endswith("/SLO/POST")
    native = parse_provider_settings(
        "s", {"metadata_file": str(SHIBBOLETH), "logout_method": "frontchannel_iframe"}
    )
    assert (native.sls_binding, native.sls_url.rsplit("/", 1)[1]) == (
        SlsBinding.REDIRECT,
        "Redirect",
    )
    by_url = parse_provider_settings(
        "s",
        {
            "metadata_file": str(SHIBBOLETH),
            "sls_url": "https://sp.example.org/Shibboleth.sso/SLO/POST",
        },
    )
    assert by_url.sls_binding is SlsBinding.POST
    (soap,) = _problems({"metadata_file": str(SIMPLESAMLPHP), "sls_binding": "soap"})
    assert soap.startswith(
        f"provider 'sp': sls_binding: {SIMPLESAMLPHP} has no SingleLogoutService for soap"
    )
    assert "it lists: redirect https://app.example.com/" in soap
    (method,) = _problems({"metadata_file": str(SIMPLESAMLPHP), "logout_method": "backchannel"})
    assert method.startswith("provider 'sp': logout_method: ")
    (url,) = _problems(
        {"metadata_file": str(SIMPLESAMLPHP), "sls_url": "https://elsewhere.test/slo"}
    )
    assert url.startswith("provider 'sp': sls_binding: required: ")


def test_signed_metadata_is_verified_when_required(signer: KeyPair, tmp_path: Path) -> None:
    """With metadata_signed_by, a signature by that certificate is needed: signed passes;
    unsigned, signed by another key, or altered after signing is refused."""
    signed = tmp_path / "signed.xml"
    signed.write_bytes(sign_metadata(SHIBBOLETH.read_bytes(), signer))
    entry = {"metadata_file": str(signed), "metadata_signed_by": str(signer.cert_path)}
    assert parse_provider_settings("shib", entry).entity_id == SHIB_ENTITY

    unsigned = {**entry, "metadata_file": str(SHIBBOLETH)}
    (problem,) = _problems(unsigned)
    assert problem.startswith(f"provider 'sp': metadata_file: {SHIBBOLETH} is not signed")

    other = make_pair(tmp_path, "other")
    (wrong_key,) = _problems({**entry, "metadata_signed_by": other.cert_pem})
    assert "signature is refused with the metadata_signed_by certificate" in wrong_key

    altered = tmp_path / "altered.xml"
    altered.write_bytes(signed.read_bytes().replace(b"SLO/SOAP", b"SLO/EVIL"))
    (tampered,) = _problems({**entry, "metadata_file": str(altered)})
    assert "signature is refused" in tampered


def test_a_signed_aggregate_covers_the_entity_it_holds(signer: KeyPair, tmp_path: Path) -> None:
    """A federation signs its EntitiesDescriptor: that signature vouches for the SP inside."""
    signed = tmp_path / "federation.xml"
    signed.write_bytes(sign_metadata(FEDERATION.read_bytes(), signer))
    sp = parse_provider_settings(
        "ssp",
        {
            "metadata_file": str(signed),
            "metadata_signed_by": signer.cert_pem,
            "entity_id": SSP_ENTITY,
        },
    )
    assert sp.entity_id == SSP_ENTITY


def test_unverifiable_signer_settings_are_refused(signer: KeyPair, tmp_path: Path) -> None:
    """metadata_signed_by must be a readable certificate, and needs metadata to apply to."""
    (unreadable,) = _problems(
        {"metadata_file": str(SHIBBOLETH), "metadata_signed_by": str(tmp_path / "none.pem")}
    )
    assert unreadable.startswith(f"provider 'sp': metadata_signed_by: cannot read {tmp_path}")
    lone = _problems(
        {
            "entity_id": "e",
            "sls_url": "https://a.test/slo",
            "sls_binding": "soap",
            "metadata_signed_by": str(signer.cert_path),
        }
    )
    assert lone == [
        "provider 'sp': metadata_signed_by: applies to the SP's metadata: give metadata_file "
        "or metadata, or leave it out"
    ]


@pytest.mark.parametrize(
    ("target", "until"),
    [
        ('entityID="https://sp.example.org/shibboleth"', "2026-11-29T09:59:59Z"),
        ("<md:SPSSODescriptor protocolSupportEnumeration", "2025-01-01T00:00:00"),
    ],
)
def test_expired_metadata_is_refused(target: str, until: str) -> None:
    """A validUntil in the past, on the entity or on its SP role, refuses the metadata."""
    text = SHIBBOLETH.read_text()
    head, _, attribute = target.partition(" ")
    expired = text.replace(target, f'{head} validUntil="{until}" {attribute}'.rstrip(), 1)
    assert expired != text
    with pytest.raises(MessageError, match=r"expired at .* \(validUntil on"):
        read_sp_metadata(expired.encode(), what="sp.xml", now=NOW)
    fresh = text.replace(
        target, f'{head} validUntil="2027-01-01T00:00:00Z" {attribute}'.rstrip(), 1
    )
    assert read_sp_metadata(fresh.encode(), what="sp.xml", now=NOW).entity_id == SHIB_ENTITY


def test_an_expired_aggregate_is_refused() -> None:
    """The federation's own validUntil covers every entity in it."""
    text = FEDERATION.read_text().replace("2099-01-01T00:00:00Z", "2026-11-01T00:00:00Z")
    with pytest.raises(MessageError, match="expired at 2026-11-01T00:00:00"):
        read_sp_metadata(text.encode(), what="fed.xml", entity_id=SHIB_ENTITY, now=NOW)
    bad = FEDERATION.read_text().replace("2099-01-01T00:00:00Z", "soon")
    with pytest.raises(MessageError, match="validUntil 'soon' on EntitiesDescriptor is no"):
        read_sp_metadata(bad.encode(), what="fed.xml", entity_id=SHIB_ENTITY, now=NOW)


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (
            b'<!DOCTYPE md [<!ENTITY x SYSTEM "file:///etc/passwd">]><md:EntityDescriptor/>',
            "has a DTD (DOCTYPE), which is never accepted",
        ),
        (b"<md:EntityDescriptor", "is not well-formed XML"),
        (b"<html/>", "is not SAML metadata: its root is 'html'"),
        (
            FEDERATION.read_bytes().split(b"<md:EntityDescriptor", 2)[0]
            + b"<md:EntityDescriptor entityID='https://idp.test'/></md:EntitiesDescriptor>",
            "holds no service provider (no SPSSODescriptor)",
        ),
        (
            SIMPLESAMLPHP.read_bytes().replace(b'SAML:2.0:protocol"', b'SAML:1.1:protocol"'),
            "does not support SAML 2.0",
        ),
        (
            SIMPLESAMLPHP.read_bytes().replace(
                b"bindings:HTTP-Redirect", b"bindings:HTTP-Artifact"
            ),
            "has no SingleLogoutService for soap or redirect or post (it lists: none in SOAP, "
            "HTTP-Redirect or HTTP-POST; only urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Artifact)",
        ),
        (
            re.sub(
                rb"<ds:X509Certificate>[^<]*",
                b"<ds:X509Certificate>bm90IGEgY2VydA==",
                SIMPLESAMLPHP.read_bytes(),
            ),
            "X509Certificate is not a base64 DER certificate",
        ),
    ],
)
def test_unusable_metadata_is_refused_naming_file_and_field(
    document: bytes, expected: str, tmp_path: Path
) -> None:
    """A DTD, malformed XML, no SP, no SAML 2.0, no usable SLO endpoint, a bad certificate:
    one problem naming the provider, metadata_file and the file."""
    path = tmp_path / "sp.xml"
    path.write_bytes(document)
    (problem,) = _problems({"metadata_file": str(path)})
    assert problem.startswith(f"provider 'sp': metadata_file: {path}"), problem
    assert expected in problem, problem


def test_a_value_the_metadata_gave_is_reported_on_metadata_file(tmp_path: Path) -> None:
    """An http SLO endpoint (without allow_http) or a weak certificate from the metadata is
    named on metadata_file with the field it filled; allow_http admits the http endpoint."""
    http = tmp_path / "http.xml"
    http.write_text(
        SIMPLESAMLPHP.read_text().replace('Location="https://app', 'Location="http://app')
    )
    (problem,) = _problems({"metadata_file": str(http)})
    assert problem.startswith(f"provider 'sp': metadata_file: {http}: its sls_url: must use https")
    allowed = parse_provider_settings("sp", {"metadata_file": str(http), "allow_http": True})
    assert allowed.sls_url.startswith("http://app")

    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 (refused)
    der = self_signed(weak, NOW).public_bytes(serialization.Encoding.DER)
    weak_doc = tmp_path / "weak.xml"
    weak_doc.write_text(
        re.sub(
            r"<ds:X509Certificate>[^<]*",
            "<ds:X509Certificate>" + base64.b64encode(der).decode(),
            SIMPLESAMLPHP.read_text(),
            count=1,
        )
    )
    (weak_problem,) = _problems({"metadata_file": str(weak_doc)})
    assert weak_problem.startswith(f"provider 'sp': metadata_file: {weak_doc}: its sp_certificate")
    assert "an RSA key of 1024 bits; at least 2048 required" in weak_problem


def test_every_listed_endpoint_must_be_a_uri(tmp_path: Path) -> None:
    """An endpoint kept in slo_endpoints (not the chosen one) is still checked: a Location
    that is no URI refuses the metadata, named on metadata_file."""
    bad = tmp_path / "bad.xml"
    bad.write_text(
        SHIBBOLETH.read_text().replace(
            "https://sp.example.org/Shibboleth.sso/SLO/POST", "/SLO/POST"
        )
    )
    (problem,) = _problems({"metadata_file": str(bad)})
    assert problem == (
        f"provider 'sp': metadata_file: {bad}: its slo_endpoints.2.location: must be an "
        "absolute URI"
    )


def test_every_problem_in_one_round(tmp_path: Path) -> None:
    """A refused metadata file and an unrelated mistake are both reported; the fields the
    metadata was to fill are not reported missing on top."""
    problems = _problems({"metadata_file": str(tmp_path / "missing.xml"), "sign_requets": True})
    assert problems == [
        f"provider 'sp': metadata_file: cannot read {tmp_path / 'missing.xml'}: no such file "
        "or directory",
        "provider 'sp': sign_requets: unknown field (did you mean sign_requests?)",
    ]
    both = _problems({"metadata_file": str(SHIBBOLETH), "metadata": "<x/>"})
    assert both == ["provider 'sp': metadata: give metadata_file or metadata, not both"]
    assert "provider 'sp': metadata_fil: unknown field (did you mean metadata_file?)" in (
        _problems({"metadata_fil": str(SHIBBOLETH)})
    )


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (
            {"metadata_file": "/dev/zero"},
            "metadata_file: cannot read /dev/zero: a character device",
        ),
        ({"metadata_file": 7}, "metadata_file: must be the path of the SP's metadata XML"),
        ({"metadata": ""}, "metadata: must be the SP's metadata XML, as a string"),
        ({"metadata": "x" * (16 * 1024 * 1024)}, "over the 16777216 byte limit"),
    ],
)
def test_bad_metadata_values_are_refused(entry: dict[str, Any], expected: str) -> None:
    """A device, a non-string, an empty or an oversized document: refused at once, named."""
    (problem,) = _problems(entry)
    assert expected in problem, problem


def test_providers_file_check_names_the_file(signer: KeyPair, tmp_path: Path) -> None:
    """Through the providers-file check, a metadata problem names the providers file too."""
    handler = handler_with(signer, tmp_path)
    assert isinstance(handler, SamlHandler)
    tables = [
        {"name": "shib", "protocol": "saml", "metadata_file": str(SHIBBOLETH)},
        {"name": "ssp", "protocol": "saml", "metadata_file": str(FEDERATION)},
    ]
    with pytest.raises(InputError) as caught:
        check_providers(tables, {"saml": handler}, "providers.toml")
    (problem,) = caught.value.problems
    assert str(problem).startswith(
        f"providers.toml: provider 'ssp': metadata_file: {FEDERATION} holds 2"
    )
    checked = check_providers(tables[:1], {"saml": handler}, "providers.toml")
    ((config, stored),) = checked.providers
    assert config.name == "shib"
    assert stored["sls_binding"] == "soap"
    assert stored["entity_id"] == SHIB_ENTITY
    assert SamlProviderSettings.model_validate(stored).slo_endpoints[0].location.endswith("SOAP")
