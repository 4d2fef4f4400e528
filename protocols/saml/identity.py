"""The IdP's SAML identity: its entity id, RSA signing key and X.509 certificate.

From ``key_file`` and ``cert_file`` of ``[protocols.saml]`` when configured; otherwise a
self-signed pair is generated into ``<data_dir>/saml-idp/`` when the handler starts (under a
file lock, so several worker processes make one) and reused from then on.
"""

from __future__ import annotations

import base64
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
import xmlsec
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from protocols.files import CERTIFICATE_MAX, UnreadableFileError, read_regular_file
from protocols.keyfiles import directory_lock, write_private
from protocols.saml.uris import RSA_MIN_BITS
from schemas.errors import ConfigurationError

if TYPE_CHECKING:  # the settings module imports this one (certificate fingerprints)
    from protocols.base import HostInfo
    from protocols.saml.settings import SamlSettings

__all__ = [
    "IdentitySource",
    "IdpIdentity",
    "fingerprint",
    "generate_identity",
    "load_identity",
    "self_signed",
]

_log = structlog.get_logger("logout.saml.identity")
_KEY_FILE = "key.pem"
_CERT_FILE = "cert.pem"
_VALIDITY = timedelta(days=3650)


@dataclass(frozen=True, slots=True)
class IdpIdentity:
    """Entity id, signing key and certificate. Its repr never shows the key."""

    entity_id: str
    private_key: rsa.RSAPrivateKey
    certificate: x509.Certificate
    #: The same key and certificate, loaded once for python-xmlsec (copied per signature).
    signing_key: xmlsec.Key
    source: str

    def __repr__(self) -> str:
        return f"IdpIdentity(entity_id={self.entity_id!r}, source={self.source!r})"

    @property
    def certificate_base64(self) -> str:
        """The certificate's DER in base64, as ``<ds:X509Certificate>`` carries it."""
        der = self.certificate.public_bytes(serialization.Encoding.DER)
        return base64.b64encode(der).decode("ascii")

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the certificate's DER, hex with colons (as SP admin screens show it)."""
        return fingerprint(self.certificate)


def fingerprint(certificate: x509.Certificate) -> str:
    """SHA-256 of ``certificate``'s DER, upper-case hex with colons."""
    digest = certificate.fingerprint(hashes.SHA256()).hex().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def _private_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _identity(
    entity_id: str, key: rsa.RSAPrivateKey, certificate: x509.Certificate, source: str
) -> IdpIdentity:
    if certificate.public_key() != key.public_key():
        raise ConfigurationError(f"{source}: the certificate is not for the signing key")
    signing_key = xmlsec.Key.from_memory(_private_pem(key), xmlsec.constants.KeyDataFormatPem)
    signing_key.load_cert_from_memory(
        certificate.public_bytes(serialization.Encoding.PEM), xmlsec.constants.KeyDataFormatCertPem
    )
    return IdpIdentity(entity_id, key, certificate, signing_key, source)


def _read(path: Path, what: str) -> bytes:
    try:
        return read_regular_file(path, CERTIFICATE_MAX)
    except UnreadableFileError as exc:
        raise ConfigurationError(f"{what} {path}: {exc}") from exc


def _load_key(path: Path, what: str) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(_read(path, what), password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"{what} {path}: not an unencrypted PEM private key") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigurationError(f"{what} {path}: must be an RSA key (messages are RSA-SHA256)")
    if key.key_size < RSA_MIN_BITS:
        raise ConfigurationError(f"{what} {path}: RSA keys must have at least {RSA_MIN_BITS} bits")
    return key


def _load_certificate(path: Path, what: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(_read(path, what))
    except ValueError as exc:
        raise ConfigurationError(f"{what} {path}: not a PEM X.509 certificate") from exc


def load_identity(entity_id: str, key_file: Path, cert_file: Path) -> IdpIdentity:
    """The configured key and certificate; they must belong together."""
    key = _load_key(key_file, "key_file of [protocols.saml]")
    certificate = _load_certificate(cert_file, "cert_file of [protocols.saml]")
    return _identity(entity_id, key, certificate, f"{key_file} + {cert_file}")


def self_signed(key: rsa.RSAPrivateKey, now: datetime) -> x509.Certificate:
    """A self-signed certificate for ``key``, valid ten years (SAML trusts it by pinning)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "logout-orchestrator SAML IdP")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


def generate_identity(entity_id: str, directory: Path) -> tuple[IdpIdentity, bool]:
    """The pair in ``directory``, made (mode 0600) when missing. True when anything was made.

    Several processes at once make one pair: the directory is locked meanwhile.
    """
    key_path, cert_path = directory / _KEY_FILE, directory / _CERT_FILE
    with directory_lock(directory):
        made = False
        if key_path.exists():
            key = _load_key(key_path, "generated SAML key")
        else:
            key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_MIN_BITS)
            write_private(key_path, _private_pem(key))
            made = True
        if cert_path.exists():
            certificate = _load_certificate(cert_path, "generated SAML certificate")
        else:
            certificate = self_signed(key, datetime.now(UTC))
            write_private(cert_path, certificate.public_bytes(serialization.Encoding.PEM))
            made = True
    return _identity(entity_id, key, certificate, str(directory)), made


class IdentitySource:
    """The identity in force for the handler's settings, loaded (or generated) once, by
    :meth:`load` at start-up; signing never reads a file."""

    def __init__(self, settings: SamlSettings, host: HostInfo) -> None:
        self._settings = settings
        self._host = host
        self._lock = threading.Lock()
        self._identity: IdpIdentity | None = None

    @property
    def entity_id(self) -> str:
        """``entity_id``, else the ``issuer``."""
        return self._settings.entity_id_for(self._host.issuer)

    @property
    def configured(self) -> bool:
        """True when the key and certificate come from the settings."""
        return self._settings.key_file is not None

    def _load(self) -> IdpIdentity:
        s = self._settings
        if s.key_file is not None and s.cert_file is not None:
            return load_identity(self.entity_id, s.key_file, s.cert_file)
        identity, made = generate_identity(self.entity_id, self._host.data_dir / "saml-idp")
        if made:
            _log.warning(
                "generated a SAML signing key and self-signed certificate; point key_file "
                "and cert_file of [protocols.saml] at managed ones in production",
                path=identity.source,
                sha256_fingerprint=identity.fingerprint,
            )
        return identity

    def load(self) -> IdpIdentity:
        """Load (or generate) the identity; once, later calls return what was loaded."""
        with self._lock:
            if self._identity is None:
                self._identity = self._load()
            return self._identity

    @property
    def current(self) -> IdpIdentity:
        """The identity :meth:`load` loaded."""
        identity = self._identity
        if identity is None:
            raise ConfigurationError(
                "the SAML key and certificate are not loaded: the host starts the handler "
                "(ProtocolHandler.start) before it signs"
            )
        return identity
