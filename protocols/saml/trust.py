"""What an SP's signatures are checked against: its certificates, and whether SHA-1 passes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import xmlsec
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from protocols.saml.identity import fingerprint

__all__ = ["Trust"]


@dataclass(frozen=True)
class Trust:
    """The certificates a signature must verify with (none: nothing verifies), and whether
    SHA-1 signatures and digests are accepted (``allow_sha1_signatures``)."""

    certificates: tuple[x509.Certificate, ...] = ()
    allow_sha1: bool = False

    @classmethod
    def of(cls, certificates: Sequence[x509.Certificate], *, allow_sha1: bool = False) -> Trust:
        return cls(tuple(certificates), allow_sha1)

    @cached_property
    def keys(self) -> list[xmlsec.Key]:
        """The certificates as python-xmlsec keys."""
        return [
            xmlsec.Key.from_memory(
                c.public_bytes(serialization.Encoding.PEM), xmlsec.constants.KeyDataFormatCertPem
            )
            for c in self.certificates
        ]

    @cached_property
    def fingerprints(self) -> tuple[str, ...]:
        """SHA-256 fingerprints of the certificates, as an error names them."""
        return tuple(fingerprint(c) for c in self.certificates)
