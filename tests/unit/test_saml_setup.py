"""Setting SAML up: provider settings, the IdP identity (configured or generated), metadata,
and the handler loading by entry point."""

from __future__ import annotations

import stat
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import onelogin.saml2
import pytest
import structlog
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from lxml import etree
from onelogin.saml2.constants import OneLogin_Saml2_Constants
from onelogin.saml2.idp_metadata_parser import OneLogin_Saml2_IdPMetadataParser
from onelogin.saml2.xml_utils import OneLogin_Saml2_XML

from orchestrator import ConfigurationError, InputError, Runtime, Settings
from orchestrator.handlers import handler_settings, load_handlers
from orchestrator.logging import configure_logging
from protocols import Channel, HostInfo, ProviderInfo
from protocols.saml import (
    IdentitySource,
    SamlHandler,
    SamlSettings,
    generate_identity,
    parse_provider_settings,
    self_signed,
)
from tests.saml_support import KeyPair, handler_with, make_pair
from workers.cli import main

SLS = "https://sp.test/saml/sls"
MD = "urn:oasis:names:tc:SAML:2.0:metadata"
ALG = "urn:oasis:names:tc:SAML:metadata:algsupport"


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> KeyPair:
    """A key pair (the IdP's, or an SP's)."""
    return make_pair(tmp_path_factory.mktemp("keys"), "pair")


def _problems(settings: dict[str, Any]) -> list[str]:
    with pytest.raises(InputError) as caught:
        parse_provider_settings("payroll", {"entity_id": "https://sp.test", **settings})
    return [str(problem) for problem in caught.value.problems]


# -- provider settings ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("binding", "method", "channel"),
    [
        ("soap", None, Channel.BACKCHANNEL),
        ("soap", "backchannel", Channel.BACKCHANNEL),
        ("redirect", None, Channel.FRONTCHANNEL_IFRAME),
        ("redirect", "frontchannel_iframe", Channel.FRONTCHANNEL_IFRAME),
        ("redirect", "frontchannel_native", Channel.FRONTCHANNEL_NATIVE),
        ("post", None, Channel.FRONTCHANNEL_NATIVE),
        ("post", "frontchannel_native", Channel.FRONTCHANNEL_NATIVE),
    ],
)
def test_working_combinations(
    pair: KeyPair, tmp_path: Path, binding: str, method: str | None, channel: Channel
) -> None:
    """Each binding with the methods it can serve; the method defaults from the binding."""
    handler = handler_with(pair, tmp_path)
    table = {"entity_id": "https://sp.test", "sls_url": SLS, "sls_binding": binding}
    if method:
        table["logout_method"] = method
    parsed = handler.validate_settings("payroll", table)
    assert handler.channel(ProviderInfo("payroll", "saml", True, False, parsed)) is channel


@pytest.mark.parametrize(
    ("binding", "method", "needs"),
    [
        ("redirect", "backchannel", "'soap'"),
        ("post", "backchannel", "'soap'"),
        ("soap", "frontchannel_iframe", "'redirect'"),
        ("post", "frontchannel_iframe", "'redirect'"),
        ("soap", "frontchannel_native", "'post' or 'redirect'"),
    ],
)
def test_impossible_combinations_are_refused(binding: str, method: str, needs: str) -> None:
    """A method with a binding that cannot carry it is refused, naming provider and field."""
    problems = _problems({"sls_url": SLS, "sls_binding": binding, "logout_method": method})
    assert problems == [
        f"provider 'payroll': sls_binding: logout_method {method!r} needs sls_binding {needs}, "
        f"not {binding!r}"
    ]


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"sls_binding": "soap"}, "provider 'payroll': sls_url: Field required"),
        ({"sls_url": SLS}, "provider 'payroll': sls_binding: Field required"),
        (
            {"sls_url": SLS, "sls_binding": "artifact"},
            "provider 'payroll': sls_binding: Input should be 'soap', 'redirect' or 'post'",
        ),
        (
            {"sls_url": "http://sp.test/sls", "sls_binding": "soap"},
            "provider 'payroll': sls_url: must use https (set allow_http = true to permit http)",
        ),
        (
            {"sls_url": "/sls", "sls_binding": "soap"},
            "provider 'payroll': sls_url: must be an absolute URI",
        ),
        (
            {"sls_url": SLS, "sls_binding": "soap", "require_signed_responses": True},
            "provider 'payroll': sp_certificate: required by require_signed_responses = true",
        ),
        (
            {"sls_url": SLS, "sls_binding": "soap", "client_id": "x"},
            "provider 'payroll': client_id: unknown field (did you mean entity_id?)",
        ),
        (
            {"sls_url": SLS, "sls_binding": "soap", "sp_certificate": "/no/such/cert.pem"},
            "provider 'payroll': sp_certificate: cannot read /no/such/cert.pem: "
            "no such file or directory",
        ),
    ],
)
def test_bad_settings_name_provider_and_field(settings: dict[str, Any], expected: str) -> None:
    """Every bad setting is refused with the provider, the field and the problem."""
    assert expected in _problems(settings)


def test_certificate_is_read_checked_and_stored_as_pem(pair: KeyPair, tmp_path: Path) -> None:
    """sp_certificate: a file is read on load, kept as PEM, and valid without the file later."""
    copy = tmp_path / "sp.pem"
    copy.write_text(pair.cert_pem)
    parsed = parse_provider_settings(
        "payroll",
        {"entity_id": "e", "sls_url": SLS, "sls_binding": "soap", "sp_certificate": str(copy)},
    )
    assert parsed.sp_certificate == pair.cert_pem
    stored = parsed.model_dump(mode="json")
    copy.unlink()
    again = parse_provider_settings("payroll", stored)
    assert again == parsed
    assert len(again.trust.keys) == 1
    inline = parse_provider_settings("payroll", {**stored, "sp_certificate": pair.cert_pem})
    assert inline == parsed


def test_certificate_must_be_a_usable_certificate(pair: KeyPair, tmp_path: Path) -> None:
    """Not a certificate, or a weak RSA key: refused on load."""
    base = {"sls_url": SLS, "sls_binding": "soap"}
    key_file = tmp_path / "key.pem"
    key_file.write_text(pair.key_pem)
    assert _problems({**base, "sp_certificate": str(key_file)}) == [
        "provider 'payroll': sp_certificate: not a PEM X.509 certificate"
    ]
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - weak on purpose
    weak_pem = self_signed(weak, datetime.now(UTC)).public_bytes(serialization.Encoding.PEM)
    assert _problems({**base, "sp_certificate": weak_pem.decode()}) == [
        "provider 'payroll': sp_certificate: an RSA key of 1024 bits; at least 2048 required"
    ]


def test_providers_file_with_a_bad_saml_provider_is_refused_whole(
    settings: Settings, pair: KeyPair
) -> None:
    """providers load: one impossible SAML provider refuses the file, naming it."""
    runtime = Runtime.start(settings, handlers={"saml": handler_with(pair, settings.data_dir)})
    try:
        text = f"""
[[providers]]
name = "good"
protocol = "saml"
entity_id = "https://good.test"
sls_url = "{SLS}"
sls_binding = "post"

[[providers]]
name = "bad"
protocol = "saml"
entity_id = "https://bad.test"
sls_url = "{SLS}"
sls_binding = "redirect"
logout_method = "backchannel"
"""
        with pytest.raises(InputError) as caught:
            runtime.registry.load_providers_file(text, "providers.toml")
        assert [p.where for p in caught.value.problems] == ["providers.toml: provider 'bad'"]
        assert [p.field for p in caught.value.problems] == ["sls_binding"]
        loaded = runtime.registry.load_providers_file(
            text.split('[[providers]]\nname = "bad"')[0], "p"
        )
        assert loaded.created == 1
    finally:
        runtime.close()


# -- the IdP identity --------------------------------------------------------------------


def _own(settings: Settings) -> SamlSettings:
    """The SAML handler's settings as the host builds them from ``settings``."""
    own = handler_settings(settings, SamlHandler)
    assert isinstance(own, SamlSettings)
    return own


def test_settings_key_and_certificate_go_together(pair: KeyPair, tmp_path: Path) -> None:
    """key_file without cert_file (or the reverse) is a settings error naming the section."""
    given = {"saml": {"key_file": str(pair.key_path)}}
    settings = Settings.load(None, data_dir=tmp_path, protocol_settings=given)
    with pytest.raises(
        ConfigurationError, match=r"option: protocols\.saml: key_file and cert_file go together"
    ):
        _own(settings)


def test_settings_endpoint_urls_are_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """slo_urls: JSON in LOGOUT_SAML_SLO_URLS; binding names and absolute URLs only, a refusal
    naming the variable."""
    monkeypatch.setenv("LOGOUT_SAML_SLO_URLS", '{"soap": "https://idp.test/soap"}')
    assert _own(Settings.load(None, data_dir=tmp_path)).slo_urls == {
        "soap": "https://idp.test/soap"
    }
    monkeypatch.setenv("LOGOUT_SAML_SLO_URLS", '{"soap": "/relative"}')
    with pytest.raises(ConfigurationError, match="is not an absolute http"):
        _own(Settings.load(None, data_dir=tmp_path))
    monkeypatch.setenv("LOGOUT_SAML_SLO_URLS", '{"artifact": "https://idp.test/a"}')
    with pytest.raises(
        ConfigurationError,
        match=r"LOGOUT_SAML_SLO_URLS \(environment\): protocols\.saml\.slo_urls\.artifact",
    ):
        _own(Settings.load(None, data_dir=tmp_path))


def test_generated_once_and_reused(tmp_path: Path) -> None:
    """With no key configured, the handler's start generates key and certificate (0600),
    says so without showing the key, and every later start (other processes too) reuses them."""
    host = HostInfo(issuer="https://idp.example", data_dir=tmp_path)
    configure_logging("INFO", "json")  # another test may have left a higher level
    with structlog.testing.capture_logs() as logs:
        handler = SamlHandler(SamlSettings(), host)
        assert not (tmp_path / "saml-idp").exists()  # nothing until the host starts it
        with pytest.raises(ConfigurationError, match="not loaded: the host starts the handler"):
            _ = handler.identity.current  # what signing reads: never a file
        handler.start()
        first = handler.identity.current
        second = IdentitySource(SamlSettings(), host).load()
    assert first.entity_id == "https://idp.example"
    assert first.certificate == second.certificate
    folder = tmp_path / "saml-idp"
    assert sorted(p.name for p in folder.glob("*.pem")) == ["cert.pem", "key.pem"]
    for path in folder.glob("*.pem"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    (log,) = logs
    assert log["log_level"] == "warning"
    assert log["path"] == str(folder)
    assert log["sha256_fingerprint"] == first.fingerprint
    assert "PRIVATE" not in repr(log)
    assert repr(first) == f"IdpIdentity(entity_id='https://idp.example', source='{folder}')"


def test_concurrent_first_uses_make_one_pair(tmp_path: Path) -> None:
    """Several starting at once (the directory lock) end up with the same certificate."""
    results: list[bytes] = []

    def use() -> None:
        identity, _ = generate_identity("https://idp", tmp_path / "saml-idp")
        results.append(identity.certificate.public_bytes(serialization.Encoding.DER))

    threads = [threading.Thread(target=use) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4
    assert len(set(results)) == 1


def test_missing_certificate_is_remade_for_the_kept_key(tmp_path: Path) -> None:
    """A crash between writing the key and the certificate: the key is kept, a cert made."""
    first, made = generate_identity("e", tmp_path)
    assert made
    (tmp_path / "cert.pem").unlink()
    second, made = generate_identity("e", tmp_path)
    assert made
    assert second.certificate.public_key() == first.private_key.public_key()
    assert generate_identity("e", tmp_path)[1] is False


def _with_files(key_file: Path, cert_file: Path, data_dir: Path) -> SamlHandler:
    own = SamlSettings(key_file=key_file, cert_file=cert_file)
    return SamlHandler(own, HostInfo(issuer="https://idp.example", data_dir=data_dir))


def test_configured_identity_loads_at_start(pair: KeyPair, tmp_path: Path) -> None:
    """Configured files are used (nothing generated) and checked when the handler starts."""
    handler = handler_with(pair, tmp_path, entity_id="urn:idp:test")
    assert handler.identity.current.entity_id == "urn:idp:test"
    assert not (tmp_path / "saml-idp").exists()
    other = make_pair(tmp_path, "other")
    with pytest.raises(ConfigurationError, match="the certificate is not for the signing key"):
        _with_files(pair.key_path, other.cert_path, tmp_path)
    ec_key = tmp_path / "ec.pem"
    ec_key.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(ConfigurationError, match="must be an RSA key"):
        _with_files(ec_key, pair.cert_path, tmp_path)
    with pytest.raises(ConfigurationError, match="no such file"):
        _with_files(tmp_path / "none.pem", pair.cert_path, tmp_path)


# -- metadata and loading ----------------------------------------------------------------


def test_metadata_command_as_python3_saml_reads_it(pair: KeyPair, tmp_path: Path) -> None:
    """``saml metadata``: schema-valid, and python3-saml finds entity id, cert and endpoints."""
    env = {
        "LOGOUT_DATA_DIR": str(tmp_path),
        "LOGOUT_ISSUER": "https://idp.example/",
        "LOGOUT_SAML_KEY_FILE": str(pair.key_path),
        "LOGOUT_SAML_CERT_FILE": str(pair.cert_path),
    }
    result = CliRunner().invoke(main, ["saml", "metadata"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    xml = result.output.encode()
    valid = OneLogin_Saml2_XML.validate_xml(xml, "saml-schema-metadata-2.0.xsd")
    assert not isinstance(valid, str), valid
    parsed = OneLogin_Saml2_IdPMetadataParser.parse(xml.decode())["idp"]
    assert parsed["entityId"] == "https://idp.example/"
    assert parsed["singleLogoutService"]["url"] == "https://idp.example/saml/slo"
    assert parsed["singleSignOnService"]["url"] == "https://idp.example/saml/sso"
    body = "".join(pair.cert_pem.strip().splitlines()[1:-1])
    assert parsed["x509cert"] == body

    custom = {**env, "LOGOUT_SAML_SLO_URLS": '{"soap": "https://idp.example/slo/soap"}'}
    result = CliRunner().invoke(main, ["saml", "metadata"], env=custom, catch_exceptions=False)
    soap = OneLogin_Saml2_IdPMetadataParser.parse(
        result.output, required_slo_binding=OneLogin_Saml2_Constants.BINDING_SOAP
    )["idp"]
    assert soap["singleLogoutService"]["url"] == "https://idp.example/slo/soap"


def _metadata_schema(tmp_path: Path) -> etree.XMLSchema:
    """The SAML metadata schema together with the algorithm support one (python3-saml's
    copies), so the ``alg:`` elements in ``md:Extensions`` are validated, not skipped."""
    schemas = Path(onelogin.saml2.__file__).parent / "schemas"
    imports = "".join(
        f'<xs:import namespace="{namespace}" schemaLocation="{(schemas / name).as_uri()}"/>'
        for namespace, name in (
            ("urn:oasis:names:tc:SAML:2.0:metadata", "saml-schema-metadata-2.0.xsd"),
            (ALG, "sstc-saml-metadata-algsupport-v1.0.xsd"),
        )
    )
    wrapper = tmp_path / "metadata-and-algsupport.xsd"
    wrapper.write_text(
        '<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">' + imports + "</xs:schema>"
    )
    return etree.XMLSchema(etree.parse(str(wrapper)))


def test_metadata_advertises_the_accepted_algorithms(pair: KeyPair, tmp_path: Path) -> None:
    """``saml metadata`` carries the algorithm support extension as the EntityDescriptor's
    first child: SHA-256/384/512 digests, RSA (2048 bits and up) and ECDSA with SHA-2, SHA-256
    first, nothing SHA-1; valid against the metadata and algsupport schemas."""
    env = {
        "LOGOUT_DATA_DIR": str(tmp_path),
        "LOGOUT_ISSUER": "https://idp.example/",
        "LOGOUT_SAML_KEY_FILE": str(pair.key_path),
        "LOGOUT_SAML_CERT_FILE": str(pair.cert_path),
    }
    result = CliRunner().invoke(main, ["saml", "metadata"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    root = etree.fromstring(result.output.encode())
    extensions = root[0]
    assert extensions.tag == f"{{{MD}}}Extensions"
    assert [etree.QName(e).localname for e in extensions] == ["DigestMethod"] * 3 + [
        "SigningMethod"
    ] * 6
    digests = [e.get("Algorithm") for e in extensions.iterfind(f"{{{ALG}}}DigestMethod")]
    assert digests == [
        "http://www.w3.org/2001/04/xmlenc#sha256",
        "http://www.w3.org/2001/04/xmldsig-more#sha384",
        "http://www.w3.org/2001/04/xmlenc#sha512",
    ]
    signing = {
        e.get("Algorithm"): e.get("MinKeySize")
        for e in extensions.iterfind(f"{{{ALG}}}SigningMethod")
    }
    more = "http://www.w3.org/2001/04/xmldsig-more#"
    assert signing == {
        f"{more}rsa-sha256": "2048",
        f"{more}rsa-sha384": "2048",
        f"{more}rsa-sha512": "2048",
        f"{more}ecdsa-sha256": None,
        f"{more}ecdsa-sha384": None,
        f"{more}ecdsa-sha512": None,
    }
    assert next(iter(signing)) == f"{more}rsa-sha256"
    assert "sha1" not in result.output
    schema = _metadata_schema(tmp_path)
    assert schema.validate(root), schema.error_log
    # The schema does check the extension: a SigningMethod without Algorithm is invalid.
    del extensions[-1].attrib["Algorithm"]
    assert not schema.validate(root)


def test_enabling_saml_loads_the_handler(tmp_path: Path) -> None:
    """protocols = ["saml"] loads SamlHandler through its entry point."""
    handlers = load_handlers(Settings.load(None, data_dir=tmp_path, protocols=["saml"]))
    assert list(handlers) == ["saml"]
    assert isinstance(handlers["saml"], SamlHandler)


def test_stored_settings_are_read_without_any_file(pair: KeyPair, tmp_path: Path) -> None:
    """providers load reads the SP's certificate file and stores the PEM; a logout parses the
    stored settings again without reading a file: a stored path is refused."""
    handler = handler_with(pair, tmp_path)
    raw = {
        "entity_id": "https://sp.test",
        "sls_url": "https://sp.test/sls",
        "sls_binding": "soap",
        "sp_certificate": str(pair.cert_path),
    }
    loaded = handler.validate_settings("sp", raw)
    assert loaded.sp_certificate.startswith("-----BEGIN CERTIFICATE-----")
    assert handler.stored_settings("sp", loaded.model_dump(mode="json")) == loaded
    with pytest.raises(InputError) as caught:
        handler.stored_settings("sp", raw)
    (problem,) = caught.value.problems
    assert problem.field == "sp_certificate"
    assert "stored settings hold the PEM, not a path" in problem.message
