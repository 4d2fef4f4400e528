"""Why an SP's signature was refused, as typed errors an operator can act on.

Each names what was found (never the message itself): the algorithm URI and, for SHA-1,
the provider setting that would accept it; the certificates expected and the one the
message carries; or content altered after signing. A delivery that meets one fails
permanently: sending the same request again gets the same answer.
"""

from __future__ import annotations

from collections.abc import Sequence

from protocols.saml.parsing import MessageError
from schemas.fields import printable

__all__ = [
    "SHA1_SETTING",
    "AlgorithmRefusedError",
    "DigestMismatchError",
    "KeyMismatchError",
    "SignatureRefusedError",
]

#: The provider setting that accepts SHA-1 signatures and digests.
SHA1_SETTING = "allow_sha1_signatures"
#: Most characters of an algorithm URI quoted from a message.
_URI_CHARS = 200


class SignatureRefusedError(MessageError):
    """A signature is present but cannot be trusted; the subclass says why."""


class AlgorithmRefusedError(SignatureRefusedError):
    """The signature or a digest uses an algorithm not accepted from this SP."""

    def __init__(self, what: str, kind: str, algorithm: str, *, sha1: bool) -> None:
        self.algorithm = printable(algorithm, _URI_CHARS)
        #: The setting that would accept it (SHA-1 only), or None.
        self.setting = SHA1_SETTING if sha1 else None
        if sha1:
            text = (
                f"{what} uses the SHA-1 {kind} algorithm {self.algorithm}, refused by default; "
                f"the provider setting {SHA1_SETTING} = true accepts it"
            )
        else:
            accepted = "RSA or ECDSA with " if kind == "signature" else ""
            text = (
                f"{what} uses the {kind} algorithm {self.algorithm or '(none)'}, not accepted "
                f"(accepted: {accepted}SHA-256, SHA-384 or SHA-512)"
            )
        super().__init__(text)


class KeyMismatchError(SignatureRefusedError):
    """The signature does not verify with any certificate configured for the SP."""

    def __init__(
        self, what: str, expected: Sequence[str], found: str | None, *, tail: str | None = None
    ) -> None:
        #: SHA-256 fingerprints of the SP's configured certificates.
        self.expected = tuple(expected)
        #: SHA-256 fingerprint of the certificate in ``KeyInfo``, if the message has one.
        self.found = found
        plural = "s" if len(self.expected) > 1 else ""
        if tail is not None:  # what to say instead of KeyInfo (a message without one)
            carried = tail
        elif found is not None:
            carried = f"the message's KeyInfo holds the certificate with fingerprint {found}"
        else:
            carried = "the message's KeyInfo holds no readable certificate"
        super().__init__(
            f"{what} does not verify with the SP certificate{plural} in sp_certificate "
            f"(SHA-256 fingerprint{plural} {', '.join(self.expected)}); {carried}"
        )


class DigestMismatchError(SignatureRefusedError):
    """The signature is the SP's, but what it signed was altered afterwards."""

    def __init__(self, what: str) -> None:
        super().__init__(
            f"{what} was altered after signing: the signature is the SP's (it verifies with "
            "sp_certificate), but the digest of the signed content does not match"
        )
