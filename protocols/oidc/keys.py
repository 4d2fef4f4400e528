"""The IdP's logout-token signing keys: RS256 or ES256, several for rotation.

One key signs (the active one); every key is published in the JWKS so relying parties
can verify tokens signed before and after a rotation. A key's ``kid`` is its RFC 7638
JWK thumbprint, so it never depends on a file name.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from protocols.files import KEY_MAX, UnreadableFileError, read_regular_file
from protocols.keyfiles import KeyDirectory, directory_lock, make_key_directory, write_private
from schemas.errors import ConfigurationError

__all__ = [
    "GENERATED_KEYS",
    "Algorithm",
    "KeyRing",
    "SigningKey",
    "generate_key",
    "host_key_ring",
    "load_key",
    "pending_key_directories",
    "thumbprint",
]

Algorithm = Literal["RS256", "ES256"]
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

_log = structlog.get_logger("logout.oidc.keys")
#: The directory under the data directory that generated signing keys are kept in: logout
#: tokens and Security Event Tokens are signed from it alike.
GENERATED_KEYS = "oidc-keys"
_REQUIRED = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y")}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def thumbprint(public_jwk: dict[str, Any]) -> str:
    """RFC 7638 SHA-256 thumbprint of a public JWK."""
    members = {k: public_jwk[k] for k in _REQUIRED[public_jwk["kty"]]}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return _b64(hashlib.sha256(canonical).digest())


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A private key with its algorithm and ``kid``. Its repr never shows the key."""

    kid: str
    alg: Algorithm
    private_key: PrivateKey
    source: str
    #: Generated into the data directory, rather than configured in ``key_files``.
    generated: bool = False

    def __repr__(self) -> str:
        return f"SigningKey(kid={self.kid!r}, alg={self.alg!r}, source={self.source!r})"

    def public_jwk(self) -> dict[str, Any]:
        """The public half as a JWK with ``kid``, ``alg`` and ``use: sig``.

        ``use`` only: RFC 7517 §4.3 advises against ``key_ops`` beside it (PyJWT adds one).
        """
        public = self.private_key.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
        else:
            jwk = ECAlgorithm.to_jwk(public, as_dict=True)
        jwk.pop("key_ops", None)
        return {**jwk, "kid": self.kid, "alg": self.alg, "use": "sig"}


def _from_private(private_key: Any, source: str) -> SigningKey:
    if isinstance(private_key, rsa.RSAPrivateKey):
        if private_key.key_size < 2048:
            raise ConfigurationError(f"{source}: RSA keys must have at least 2048 bits")
        alg: Algorithm = "RS256"
    elif isinstance(private_key, ec.EllipticCurvePrivateKey):
        if not isinstance(private_key.curve, ec.SECP256R1):
            raise ConfigurationError(f"{source}: EC keys must use P-256 for ES256")
        alg = "ES256"
    else:
        raise ConfigurationError(f"{source}: only RSA (RS256) and EC P-256 (ES256) keys sign")
    draft = SigningKey("", alg, private_key, source)
    return SigningKey(thumbprint(draft.public_jwk()), alg, private_key, source)


def load_key(path: Path) -> SigningKey:
    """Read a PEM private key (PKCS#8 or traditional, unencrypted)."""
    try:
        data = read_regular_file(path, KEY_MAX)
    except UnreadableFileError as exc:
        raise ConfigurationError(
            f"signing key {path}: {exc}; fix key_files of [protocols.oidc] (LOGOUT_OIDC_KEY_FILES)"
        ) from exc
    try:
        private_key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(f"signing key {path}: not an unencrypted PEM private key") from exc
    return _from_private(private_key, str(path))


def generate_key(directory: Path, alg: Algorithm = "RS256") -> SigningKey:
    """Create a key, write it as ``<kid>.pem`` (mode 0600) in ``directory``, return it."""
    private_key: PrivateKey = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if alg == "RS256"
        else ec.generate_private_key(ec.SECP256R1())
    )
    key = _from_private(private_key, "")
    make_key_directory(directory)
    path = directory / f"{key.kid}.pem"
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_private(path, pem)
    return SigningKey(key.kid, key.alg, private_key, str(path))


class KeyRing:
    """Configured key files plus keys generated into the data directory.

    The active key is ``active_kid`` when given, else the first configured file, else the
    oldest generated key. :meth:`load` reads them, at start-up (the handler's ``start``),
    and generates one when there is none, saying so; signing never reads a file.
    """

    def __init__(
        self, files: Sequence[Path], generated_dir: Path, active_kid: str | None = None
    ) -> None:
        self._files = list(files)
        self._dir = generated_dir
        self._active_kid = active_kid
        self._lock = threading.Lock()
        self._keys: list[SigningKey] | None = None

    def _generated(self) -> list[SigningKey]:
        paths = sorted(self._dir.glob("*.pem"), key=lambda p: (p.stat().st_mtime, p.name))
        return [replace(load_key(path), generated=True) for path in paths]

    def _load(self, generate: bool) -> list[SigningKey]:
        keys = [load_key(path) for path in self._files]
        keys += self._generated()
        if not keys and not generate:
            return []
        if not keys:
            key = self._generate_once()
            _log.warning(
                "generated a logout-token signing key; point key_files of [protocols.oidc] at "
                "managed keys "
                "in production",
                kid=key.kid,
                alg=key.alg,
                path=key.source,
            )
            keys = [key]
        by_kid: dict[str, SigningKey] = {}
        for key in keys:
            by_kid.setdefault(key.kid, key)  # the same key in two places counts once
        unique = list(by_kid.values())
        if self._active_kid is not None and self._active_kid not in {k.kid for k in unique}:
            raise ConfigurationError(
                f"active_kid of [protocols.oidc] {self._active_kid!r} is not among the keys "
                f"({', '.join(k.kid for k in unique)})"
            )
        return unique

    def _generate_once(self) -> SigningKey:
        """Generate the default key; several processes starting at once make only one."""
        with directory_lock(self._dir):
            existing = self._generated()
            return existing[0] if existing else replace(generate_key(self._dir), generated=True)

    def load(self, *, generate: bool = True) -> list[SigningKey]:
        """Read every key (and generate the default one if none exist, unless ``generate``
        is false: then none is an empty list, and the ring stays unloaded); once, later
        calls return what was read."""
        with self._lock:
            if self._keys is None:
                found = self._load(generate)
                if not found:
                    return []
                self._keys = found
            return self._keys

    @property
    def keys(self) -> list[SigningKey]:
        """Every published key, as :meth:`load` read them."""
        keys = self._keys
        if keys is None:
            raise ConfigurationError(
                "the OIDC signing keys are not loaded: the host starts the handler "
                "(ProtocolHandler.start) before it signs"
            )
        return keys

    @property
    def active(self) -> SigningKey:
        """The key that signs."""
        keys = self.keys
        if self._active_kid is None:
            return keys[0]
        return next(k for k in keys if k.kid == self._active_kid)

    def listing(self) -> list[dict[str, Any]]:
        """Every published key as ``keys list`` shows it: ``kid``, ``alg``, ``source``
        (``file`` from ``key_files`` or ``generated`` into the data directory), its
        ``path`` and whether it ``signs`` (the active key). Never the key itself."""
        active = self.active.kid
        return [
            {
                "kid": key.kid,
                "alg": key.alg,
                "source": "generated" if key.generated else "file",
                "path": key.source,
                "signs": key.kid == active,
            }
            for key in self.keys
        ]

    def jwks(self) -> dict[str, Any]:
        """The public JWKS relying parties verify logout tokens with."""
        return {"keys": [key.public_jwk() for key in self.keys]}


def host_key_ring(files: Sequence[Path], data_dir: Path, active_kid: str | None) -> KeyRing:
    """The key ring of a handler: ``files`` and the keys generated into the data directory;
    configured files load now (a bad one stops the worker), generated ones on ``start``."""
    ring = KeyRing(files, data_dir / GENERATED_KEYS, active_kid)
    if files:
        ring.load()
    return ring


def pending_key_directories(
    files: Sequence[Path], data_dir: Path, setting: str
) -> list[KeyDirectory]:
    """``<data_dir>/oidc-keys`` when a signing key will be generated there: no ``files``
    and no key generated before; ``setting`` names what to set instead."""
    directory = data_dir / GENERATED_KEYS
    if files or any(directory.glob("*.pem")):
        return []
    return [KeyDirectory(directory, setting)]
