"""What the SAML tests share: key pairs, and the independent implementations that judge our
messages: Debian's ``xmlsec1`` command for XML signatures, python3-saml (onelogin) as an SP."""

from __future__ import annotations

import hashlib
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from lxml import etree
from onelogin.saml2.constants import OneLogin_Saml2_Constants
from onelogin.saml2.logout_response import OneLogin_Saml2_Logout_Response
from onelogin.saml2.settings import OneLogin_Saml2_Settings
from onelogin.saml2.utils import OneLogin_Saml2_Utils

from protocols import HostInfo, LogoutContext, ProviderInfo, ProviderSessionInfo
from protocols.saml import SamlHandler, SamlSettings, self_signed

__all__ = [
    "EMAIL_FORMAT",
    "IDP_ENTITY",
    "LOGOUT_REQUEST",
    "LOGOUT_RESPONSE",
    "SP_ENTITY",
    "KeyPair",
    "context",
    "handler_with",
    "make_pair",
    "onelogin_settings",
    "provider",
    "provider_session",
    "sha256_fingerprint",
    "sign_metadata",
    "soap",
    "sp_logout_response",
    "sso_response",
    "xmlsec1_verify",
]

IDP_ENTITY = "https://idp.test"
SP_ENTITY = "https://sp.test/metadata"
LOGOUT_REQUEST = "urn:oasis:names:tc:SAML:2.0:protocol:LogoutRequest"
LOGOUT_RESPONSE = "urn:oasis:names:tc:SAML:2.0:protocol:LogoutResponse"
EMAIL_FORMAT = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"
_P = "{urn:oasis:names:tc:SAML:2.0:protocol}"


@dataclass(frozen=True, slots=True)
class KeyPair:
    """An RSA key and its self-signed certificate, as PEM text and as files."""

    key_pem: str
    cert_pem: str
    key_path: Path
    cert_path: Path


def make_pair(directory: Path, name: str) -> KeyPair:
    """A fresh 2048-bit RSA key and certificate written to ``directory/name-{key,cert}.pem``."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    cert_pem = self_signed(key, datetime.now(UTC)).public_bytes(serialization.Encoding.PEM).decode()
    directory.mkdir(parents=True, exist_ok=True)
    key_path, cert_path = directory / f"{name}-key.pem", directory / f"{name}-cert.pem"
    key_path.write_text(key_pem)
    cert_path.write_text(cert_pem)
    return KeyPair(key_pem, cert_pem, key_path, cert_path)


def sign_metadata(xml: bytes, signer: KeyPair, *, sign: bool = True) -> bytes:
    """``xml`` with an enveloped signature by ``signer`` as the root's first child (as
    federations sign metadata: RSA-SHA256, exclusive C14N, over the root's ``ID``); with
    ``sign=False`` only the empty template, for the ``xmlsec1`` command to sign."""
    import xmlsec
    from lxml import etree

    constants = xmlsec.constants
    root = etree.fromstring(xml)
    signature = xmlsec.template.create(
        root, constants.TransformExclC14N, constants.TransformRsaSha256, ns="ds"
    )
    root.insert(0, signature)
    reference = xmlsec.template.add_reference(
        signature, constants.TransformSha256, uri=f"#{root.get('ID')}"
    )
    xmlsec.template.add_transform(reference, constants.TransformEnveloped)
    xmlsec.template.add_transform(reference, constants.TransformExclC14N)
    xmlsec.template.add_x509_data(xmlsec.template.ensure_key_info(signature))
    if sign:
        context = xmlsec.SignatureContext()
        context.key = xmlsec.Key.from_memory(signer.key_pem, constants.KeyDataFormatPem)
        context.key.load_cert_from_memory(signer.cert_pem, constants.KeyDataFormatCertPem)
        context.register_id(root, "ID")
        context.sign(signature)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def sha256_fingerprint(pair: KeyPair) -> str:
    """The SHA-256 fingerprint of ``pair``'s certificate, upper-case hex with colons."""
    der = x509.load_pem_x509_certificate(pair.cert_pem.encode()).public_bytes(
        serialization.Encoding.DER
    )
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def xmlsec1_verify(xml: bytes, cert: Path, element: str, workdir: Path) -> tuple[bool, str]:
    """Verify the XML signature on ``element`` (``ns:Name``) with the xmlsec1 command.

    Only the key of ``cert`` is trusted; returns (verified, xmlsec1's output).
    """
    command = shutil.which("xmlsec1")
    assert command is not None, (
        "xmlsec1 is not installed: ./scripts/test installs Debian's xmlsec1 unless "
        "LOGOUT_TEST_NO_APT=1 (or: apt-get install xmlsec1)"
    )
    path = workdir / "signed.xml"
    path.write_bytes(xml)
    result = subprocess.run(
        [command, "--verify", "--pubkey-cert-pem", str(cert), "--id-attr:ID", element, str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return result.returncode == 0, result.stdout + result.stderr


def onelogin_settings(
    idp_cert_pem: str, sls_url: str, *, want_signed: bool = True
) -> OneLogin_Saml2_Settings:
    """python3-saml settings of an SP (``SP_ENTITY`` at ``sls_url``) trusting our IdP."""
    config: dict[str, Any] = {
        "strict": True,
        "sp": {
            "entityId": SP_ENTITY,
            "assertionConsumerService": {"url": "https://sp.test/acs"},
            "singleLogoutService": {"url": sls_url},
            "NameIDFormat": "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress",
        },
        "idp": {
            "entityId": IDP_ENTITY,
            "singleSignOnService": {"url": f"{IDP_ENTITY}/saml/sso"},
            "singleLogoutService": {"url": f"{IDP_ENTITY}/saml/slo"},
            "x509cert": idp_cert_pem,
        },
        "security": {"wantMessagesSigned": want_signed, "rejectDeprecatedAlgorithm": True},
    }
    return OneLogin_Saml2_Settings(config, sp_validation_only=True)


def sp_logout_response(
    settings: OneLogin_Saml2_Settings,
    in_response_to: str,
    *,
    status: str = OneLogin_Saml2_Constants.STATUS_SUCCESS,
    signer: KeyPair | None = None,
    sign_algorithm: str = OneLogin_Saml2_Constants.RSA_SHA256,
    digest_algorithm: str = OneLogin_Saml2_Constants.SHA256,
    substatus: str | None = None,
    status_message: str | None = None,
) -> bytes:
    """A LogoutResponse as python3-saml builds it for the SP, signed by ``signer`` if given
    (RSA-SHA256 with a SHA-256 digest unless the algorithms are named); ``substatus`` and
    ``status_message`` are added to its Status before it is signed (as Shibboleth answers
    ``Responder`` / ``PartialLogout`` when it holds no session)."""
    response = OneLogin_Saml2_Logout_Response(settings)
    response.build(in_response_to, status=status)
    xml: str = response.get_xml()
    if substatus is not None or status_message is not None:
        root = etree.fromstring(xml.encode())
        code = root.find(f"{_P}Status/{_P}StatusCode")
        assert code is not None
        if substatus is not None:
            etree.SubElement(code, f"{_P}StatusCode").set("Value", substatus)
        if status_message is not None:
            code.addnext(etree.Element(f"{_P}StatusMessage"))
            code.getnext().text = status_message  # type: ignore[union-attr]
        xml = etree.tostring(root, encoding="unicode")
    if signer is None:
        return xml.encode()
    signed: str | bytes = OneLogin_Saml2_Utils.add_sign(
        xml,
        signer.key_pem,
        signer.cert_pem,
        sign_algorithm=sign_algorithm,
        digest_algorithm=digest_algorithm,
    )
    return signed if isinstance(signed, bytes) else signed.encode()


def soap(message: bytes) -> bytes:
    """``message`` in a SOAP 1.1 envelope, as an SP writes one (any XML declaration dropped)."""
    if message.startswith(b"<?xml"):
        message = message[message.index(b"?>") + 2 :].lstrip()
    return (
        b'<?xml version="1.0" encoding="UTF-8"?>'
        b'<soap11:Envelope xmlns:soap11="http://schemas.xmlsoap.org/soap/envelope/">'
        b"<soap11:Body>" + message + b"</soap11:Body></soap11:Envelope>"
    )


def handler_with(idp: KeyPair, data_dir: Path, **settings: Any) -> SamlHandler:
    """A SAML handler whose IdP (``IDP_ENTITY``) signs with ``idp``; ``settings`` are the
    handler's own (``[protocols.saml]``)."""
    own = SamlSettings(key_file=idp.key_path, cert_file=idp.cert_path, **settings)
    return SamlHandler(own, HostInfo(issuer=IDP_ENTITY, data_dir=data_dir))


def provider(handler: SamlHandler, name: str = "sp", **fields: Any) -> ProviderInfo:
    """A SAML provider validated by ``handler``: ``SP_ENTITY``, SOAP unless ``fields`` say."""
    table: dict[str, Any] = {
        "entity_id": SP_ENTITY,
        "sls_url": "https://sp.test/saml/sls",
        "sls_binding": "soap",
        **fields,
    }
    return ProviderInfo(name, "saml", True, False, handler.validate_settings(name, table))


def provider_session(**ids: Any) -> ProviderSessionInfo:
    """Alice's provider session at the SP: an email NameID qualified by the SP, one index."""
    values: dict[str, Any] = {
        "name_id": "alice@example.com",
        "name_id_format": EMAIL_FORMAT,
        "sp_name_qualifier": SP_ENTITY,
        "session_index": "_session-7",
        **ids,
    }
    identifiers = {name: value for name, value in values.items() if value is not None}
    return ProviderSessionInfo(7, "s-1", "alice", "sp", identifiers)


def context(event_type: str = "logout.user", attempt: int = 1) -> LogoutContext:
    """A delivery attempt's context, now."""
    return LogoutContext(
        event_id="e-1",
        event_type=event_type,
        initiator="user",
        delivery_id="0b8f5f9e-0d54-4a8a-9c1e-1a3b2c4d5e6f",
        attempt=attempt,
        now=datetime.now(UTC),
    )


_A = "urn:oasis:names:tc:SAML:2.0:assertion"
_PROTOCOL = "urn:oasis:names:tc:SAML:2.0:protocol"


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def sso_response(
    idp: KeyPair,
    *,
    issuer: str,
    acs_url: str,
    audience: str,
    name_id: str,
    session_index: str,
    name_id_format: str = EMAIL_FORMAT,
) -> bytes:
    """An unsolicited SAML Response to ``acs_url``, as an IdP answers single sign-on: one
    Assertion signed by ``idp`` (RSA-SHA256, SHA-256 digest, exclusive C14N) for ``name_id``
    (qualified by the SP, ``audience``) with ``session_index``, valid for five minutes."""
    import xmlsec

    now = datetime.now(UTC)
    until = _instant(now + timedelta(minutes=5))
    a, p = f"{{{_A}}}", f"{{{_PROTOCOL}}}"
    response = etree.Element(f"{p}Response", nsmap={"samlp": _PROTOCOL, "saml": _A})
    response.attrib.update(
        {
            "ID": f"_{secrets.token_hex(16)}",
            "Version": "2.0",
            "IssueInstant": _instant(now),
            "Destination": acs_url,
        }
    )
    etree.SubElement(response, f"{a}Issuer").text = issuer
    status = etree.SubElement(response, f"{p}Status")
    etree.SubElement(status, f"{p}StatusCode", Value=OneLogin_Saml2_Constants.STATUS_SUCCESS)
    assertion = etree.SubElement(
        response, f"{a}Assertion", ID=f"_{secrets.token_hex(16)}", Version="2.0"
    )
    assertion.set("IssueInstant", _instant(now))
    etree.SubElement(assertion, f"{a}Issuer").text = issuer
    subject = etree.SubElement(assertion, f"{a}Subject")
    name = etree.SubElement(subject, f"{a}NameID", Format=name_id_format)
    name.set("SPNameQualifier", audience)
    name.text = name_id
    confirmation = etree.SubElement(
        subject, f"{a}SubjectConfirmation", Method="urn:oasis:names:tc:SAML:2.0:cm:bearer"
    )
    etree.SubElement(
        confirmation, f"{a}SubjectConfirmationData", NotOnOrAfter=until, Recipient=acs_url
    )
    conditions = etree.SubElement(
        assertion, f"{a}Conditions", NotBefore=_instant(now - timedelta(minutes=1))
    )
    conditions.set("NotOnOrAfter", until)
    restriction = etree.SubElement(conditions, f"{a}AudienceRestriction")
    etree.SubElement(restriction, f"{a}Audience").text = audience
    statement = etree.SubElement(
        assertion, f"{a}AuthnStatement", AuthnInstant=_instant(now), SessionIndex=session_index
    )
    context = etree.SubElement(statement, f"{a}AuthnContext")
    etree.SubElement(
        context, f"{a}AuthnContextClassRef"
    ).text = "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"

    constants = xmlsec.constants
    signature = xmlsec.template.create(
        assertion, constants.TransformExclC14N, constants.TransformRsaSha256, ns="ds"
    )
    assertion.insert(1, signature)  # right after the Issuer
    reference = xmlsec.template.add_reference(
        signature, constants.TransformSha256, uri=f"#{assertion.get('ID')}"
    )
    xmlsec.template.add_transform(reference, constants.TransformEnveloped)
    xmlsec.template.add_transform(reference, constants.TransformExclC14N)
    xmlsec.template.add_x509_data(xmlsec.template.ensure_key_info(signature))
    signer = xmlsec.SignatureContext()
    signer.key = xmlsec.Key.from_memory(idp.key_pem, constants.KeyDataFormatPem)
    signer.key.load_cert_from_memory(idp.cert_pem, constants.KeyDataFormatCertPem)
    signer.register_id(assertion, "ID")
    signer.sign(signature)
    return bytes(etree.tostring(response, xml_declaration=True, encoding="UTF-8"))
