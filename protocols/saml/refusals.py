"""Why an SP's signature was refused, as typed errors an operator can act on.

Each names what was found (never the message itself): the algorithm URI and, for SHA-1,
the provider setting that would accept it; the certificates expected and the one the
message carries; or content altered after signing. :func:`diagnose` tells the last two
apart once xmlsec has refused a signature. A delivery that meets one fails
permanently: sending the same request again gets the same answer.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import TYPE_CHECKING

import xmlsec
from cryptography import x509
from lxml import etree

from protocols.saml.identity import fingerprint
from protocols.saml.parsing import MessageError
from protocols.saml.trust import Trust
from protocols.saml.uris import DSIG_NS
from schemas.fields import printable

if TYPE_CHECKING:  # python-xmlsec's stubs name the transforms' type only privately
    from xmlsec.constants import __Transform as Transform

__all__ = [
    "SHA1_SETTING",
    "AlgorithmRefusedError",
    "DigestMismatchError",
    "KeyMismatchError",
    "SignatureRefusedError",
    "diagnose",
]

#: The provider setting that accepts SHA-1 signatures and digests.
SHA1_SETTING = "allow_sha1_signatures"
#: Most characters of an algorithm URI quoted from a message.
_URI_CHARS = 200
_DS = f"{{{DSIG_NS}}}"
_EXCLUSIVE = xmlsec.constants.TransformExclC14N.href
_EXC_NS = f"{{{_EXCLUSIVE}}}"


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


def diagnose(
    signature: etree._Element,
    signed_info: etree._Element,
    transform: Transform,
    trust: Trust,
    name: str,
) -> SignatureRefusedError:
    """Why a signature with accepted algorithms did not verify, once xmlsec refused it:
    when ``SignedInfo`` verifies with a trusted key, the signer is the SP and a digest
    failed (content altered); otherwise the key is not the SP's (or ``SignedInfo`` itself
    was altered)."""
    canonicalization = signed_info.find(f"{_DS}CanonicalizationMethod")
    exclusive = canonicalization is not None and canonicalization.get("Algorithm") == _EXCLUSIVE
    prefixes = signed_info.find(f"{_DS}CanonicalizationMethod/{_EXC_NS}InclusiveNamespaces")
    listed = (prefixes.get("PrefixList") or "").split() if prefixes is not None else []
    data = etree.tostring(
        signed_info,
        method="c14n",
        exclusive=exclusive,
        with_comments=False,
        inclusive_ns_prefixes=listed or None,
    )
    try:
        value = base64.b64decode(
            "".join((signature.findtext(f"{_DS}SignatureValue") or "").split())
        )
    except binascii.Error:
        value = b""
    if value and any(_verifies(data, transform, value, key) for key in trust.keys):
        return DigestMismatchError(name)
    return KeyMismatchError(
        f"{name}'s signature", trust.fingerprints, _carried_fingerprint(signature)
    )


def _verifies(data: bytes, transform: Transform, value: bytes, key: xmlsec.Key) -> bool:
    context = xmlsec.SignatureContext()
    context.key = key
    try:
        context.verify_binary(data, transform, value)
    except xmlsec.Error:
        return False
    return True


def _carried_fingerprint(signature: etree._Element) -> str | None:
    """The SHA-256 fingerprint of the certificate in the signature's ``KeyInfo``, if readable."""
    text = signature.findtext(f"{_DS}KeyInfo/{_DS}X509Data/{_DS}X509Certificate")
    if not text:
        return None
    try:
        return fingerprint(x509.load_der_x509_certificate(base64.b64decode("".join(text.split()))))
    except (binascii.Error, ValueError):
        return None
