"""``providers load`` reading SPs' SAML metadata, as a subprocess on PostgreSQL.

The signed metadata is signed by Debian's ``xmlsec1`` command, as federation operators sign
theirs, so the verification is checked against an independent signer.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import select

from orchestrator.store import Provider
from tests.saml_support import KeyPair, make_pair, sign_metadata

from .support import Stack

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).parent.parent / "sp_metadata"
SHIB_ENTITY = "https://sp.example.org/shibboleth"
SSP_ENTITY = "https://app.example.com/simplesaml/module.php/saml/sp/metadata.php/default-sp"
ENTITY_DESCRIPTOR = "urn:oasis:names:tc:SAML:2.0:metadata:EntityDescriptor"


def _xmlsec1_sign(document: bytes, signer: KeyPair, workdir: Path) -> Path:
    """``document`` signed by the ``xmlsec1`` command with ``signer``'s key."""
    command = shutil.which("xmlsec1")
    assert command is not None, (
        "xmlsec1 is not installed: ./scripts/test installs Debian's xmlsec1 unless "
        "LOGOUT_TEST_NO_APT=1 (or: apt-get install xmlsec1)"
    )
    template, signed = workdir / "template.xml", workdir / "signed.xml"
    template.write_bytes(sign_metadata(document, signer, sign=False))
    result = subprocess.run(
        [
            command,
            "--sign",
            "--privkey-pem",
            f"{signer.key_path},{signer.cert_path}",
            "--id-attr:ID",
            ENTITY_DESCRIPTOR,
            "--output",
            str(signed),
            str(template),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return signed


def _providers(stack: Stack) -> dict[str, Provider]:
    with stack.db() as db:
        return {p.name: p for p in db.scalars(select(Provider))}


def test_providers_load_takes_the_settings_from_metadata(stack: Stack, tmp_path: Path) -> None:
    """Shibboleth's metadata (signed by xmlsec1, signature required) and SimpleSAMLphp's
    inline are loaded: exit 0, the stored settings hold what the metadata says, not the file."""
    signer = make_pair(tmp_path, "federation")
    signed = _xmlsec1_sign((FIXTURES / "shibboleth-sp3.xml").read_bytes(), signer, tmp_path)
    inline = (FIXTURES / "simplesamlphp-sp.xml").read_text().replace('"""', "")
    providers = tmp_path / "providers.toml"
    providers.write_text(
        f"""\
[[providers]]
name = "shib"
protocol = "saml"
metadata_file = "{signed}"
metadata_signed_by = "{signer.cert_path}"
require_signed_responses = true

[[providers]]
name = "ssp"
protocol = "saml"
metadata = '''
{inline}'''
""",
        encoding="utf-8",
    )
    loaded = stack.cli("providers", "load", str(providers))
    assert loaded.returncode == 0, loaded.stderr
    assert "providers: 2 created, 0 updated" in loaded.stdout
    stored = _providers(stack)
    shib, ssp = stored["shib"].settings, stored["ssp"].settings
    assert shib["entity_id"] == SHIB_ENTITY
    assert (shib["sls_binding"], shib["sls_url"]) == (
        "soap",
        "https://sp.example.org/Shibboleth.sso/SLO/SOAP",
    )
    assert [e["binding"] for e in shib["slo_endpoints"]] == ["soap", "redirect", "post"]
    assert shib["sp_certificate"].count("BEGIN CERTIFICATE") == 2
    assert (
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
        in (shib["advertised_algorithms"]["signing"])
    )
    assert not {"metadata_file", "metadata", "metadata_signed_by"} & shib.keys()
    assert (ssp["entity_id"], ssp["sls_binding"]) == (SSP_ENTITY, "redirect")
    assert not {"metadata_file", "metadata"} & ssp.keys()


def test_providers_load_refuses_bad_metadata_naming_file_provider_and_field(
    stack: Stack, tmp_path: Path
) -> None:
    """Unsigned metadata where a signature is required, an expired aggregate, a DTD and a
    typo: exit 2, every problem at once naming the file, provider and field, no traceback,
    nothing stored."""
    signer = make_pair(tmp_path, "federation")
    expired = tmp_path / "expired.xml"
    expired.write_text(
        (FIXTURES / "federation.xml")
        .read_text()
        .replace("2099-01-01T00:00:00Z", "2020-01-01T00:00:00Z")
    )
    doctype = tmp_path / "doctype.xml"
    doctype.write_text('<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>')
    unsigned = FIXTURES / "shibboleth-sp3.xml"
    providers = tmp_path / "bad.toml"
    providers.write_text(
        f"""\
[[providers]]
name = "unsigned"
protocol = "saml"
metadata_file = "{unsigned}"
metadata_signed_by = "{signer.cert_path}"

[[providers]]
name = "expired"
protocol = "saml"
metadata_file = "{expired}"
entity_id = "{SSP_ENTITY}"

[[providers]]
name = "doctype"
protocol = "saml"
metadata_file = "{doctype}"
sign_requets = false
""",
        encoding="utf-8",
    )
    refused = stack.cli("providers", "load", str(providers))
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "Traceback" not in refused.stderr
    problems = [line.strip() for line in refused.stderr.splitlines()[1:]]
    prefix = f"{providers}: provider"
    assert [p.split(": ", 3)[1:3] for p in problems] == [
        ["provider 'unsigned'", "metadata_file"],
        ["provider 'expired'", "metadata_file"],
        ["provider 'doctype'", "metadata_file"],
        ["provider 'doctype'", "sign_requets"],
    ], refused.stderr
    assert all(p.startswith(prefix) for p in problems)
    assert f"{unsigned} is not signed, and metadata_signed_by requires" in problems[0]
    assert f"{expired} expired at 2020-01-01T00:00:00+00:00" in problems[1]
    assert f"{doctype} has a DTD (DOCTYPE)" in problems[2]
    assert "did you mean sign_requests?" in problems[3]
    assert "4 problem(s), nothing was applied" in refused.stderr.splitlines()[0]
    with stack.engine.connect() as connection:  # refused before the database was reached
        assert not stack.engine.dialect.has_table(connection, "providers")
