"""XML signatures (enveloped, exclusive C14N, RSA-SHA256, SHA-256) and Redirect-binding
signatures, made and checked in process with python-xmlsec.

An SP's signature may use RSA or ECDSA with SHA-256, SHA-384 or SHA-512 (SHA-1 too when
its ``allow_sha1_signatures`` is set); the algorithms are checked before the signature, and
a signature that does not verify is told apart as a key mismatch or altered content
(:mod:`protocols.saml.refusals`).

Verification trusts only the keys it is given (never a key or certificate inside the
message) and only a signature that covers the very element being read: an enveloped
``<ds:Signature>`` that is a child of that element, with one ``Reference`` whose URI is
``#`` + that element's ``ID``, an ``ID`` no other element of the document repeats, and
no transform beyond enveloped-signature and canonicalization. That closes the signature
wrapping attacks, where a signature over one element is shown next to another.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import xmlsec
from lxml import etree

from protocols.saml.parsing import MessageError
from protocols.saml.refusals import AlgorithmRefusedError, diagnose
from protocols.saml.trust import Trust
from protocols.saml.uris import DSIG_NS
from schemas.fields import printable

if TYPE_CHECKING:  # python-xmlsec's stubs name the transforms' type only privately
    from xmlsec.constants import __Transform as Transform

__all__ = [
    "ACCEPTED_DIGESTS",
    "ACCEPTED_SIGNATURES",
    "enveloped_signature",
    "sign_binary",
    "sign_enveloped",
    "signature_method",
    "verify_enveloped",
]

_C = xmlsec.constants
_DS = f"{{{DSIG_NS}}}"

#: Signature and digest algorithms accepted from an SP, most preferred first (and advertised
#: in the IdP's metadata); SHA-1 ones only with ``allow_sha1_signatures``.
_SHA2_SIGNATURES = (
    _C.TransformRsaSha256,
    _C.TransformRsaSha384,
    _C.TransformRsaSha512,
    _C.TransformEcdsaSha256,
    _C.TransformEcdsaSha384,
    _C.TransformEcdsaSha512,
)
_SHA1_SIGNATURES = (_C.TransformRsaSha1, _C.TransformEcdsaSha1)
_SHA2_DIGESTS = (_C.TransformSha256, _C.TransformSha384, _C.TransformSha512)
_SHA1_DIGESTS = (_C.TransformSha1,)
ACCEPTED_SIGNATURES: tuple[str, ...] = tuple(t.href for t in _SHA2_SIGNATURES)
ACCEPTED_DIGESTS: tuple[str, ...] = tuple(t.href for t in _SHA2_DIGESTS)

#: Canonicalization without comments, the only kind accepted.
_CANONICALIZATIONS = (_C.TransformExclC14N, _C.TransformInclC14N)
_CANONICALIZATION_URIS = frozenset(t.href for t in _CANONICALIZATIONS)
_ENVELOPED = _C.TransformEnveloped.href
_REFERENCE_TRANSFORM_URIS = frozenset({_ENVELOPED, *_CANONICALIZATION_URIS})


def sign_enveloped(element: etree._Element, key: xmlsec.Key, *, after: etree._Element) -> None:
    """Sign ``element`` (it has an ``ID``) with a ``<ds:Signature>`` right after ``after``.

    Exclusive C14N, RSA-SHA256, SHA-256 digest, and the key's certificate in ``KeyInfo``.
    """
    signature = xmlsec.template.create(
        element, _C.TransformExclC14N, _C.TransformRsaSha256, ns="ds"
    )
    after.addnext(signature)
    reference = xmlsec.template.add_reference(
        signature, _C.TransformSha256, uri=f"#{element.get('ID')}"
    )
    xmlsec.template.add_transform(reference, _C.TransformEnveloped)
    xmlsec.template.add_transform(reference, _C.TransformExclC14N)
    xmlsec.template.add_x509_data(xmlsec.template.ensure_key_info(signature))
    context = xmlsec.SignatureContext()
    context.key = key
    context.register_id(element, "ID")
    context.sign(signature)


def enveloped_signature(element: etree._Element) -> etree._Element | None:
    """The ``<ds:Signature>`` child of ``element``, or None; more than one is refused."""
    signatures = element.findall(f"{_DS}Signature")
    if len(signatures) > 1:
        raise MessageError(f"{etree.QName(element).localname} has {len(signatures)} signatures")
    return signatures[0] if signatures else None


def _check_reference(element: etree._Element, signature: etree._Element) -> None:
    name = etree.QName(element).localname
    element_id = element.get("ID")
    if not element_id:
        raise MessageError(f"{name} has no ID for its signature to reference")
    same_id = element.getroottree().xpath("count(//@*[local-name()='ID' and .=$v])", v=element_id)
    if same_id != 1:
        raise MessageError(f"{name}'s ID appears {int(same_id)} times in the document")
    references = signature.findall(f"{_DS}SignedInfo/{_DS}Reference")
    if len(references) != 1:
        raise MessageError(f"{name}'s signature has {len(references)} references, not 1")
    (reference,) = references
    if reference.get("URI") != f"#{element_id}":
        raise MessageError(f"{name}'s signature does not reference the {name} (its ID)")
    algorithms = [t.get("Algorithm") for t in reference.iterfind(f"{_DS}Transforms/{_DS}Transform")]
    if _ENVELOPED not in algorithms:
        raise MessageError(f"{name}'s signature is not an enveloped signature")
    unexpected = sorted({str(a) for a in algorithms} - _REFERENCE_TRANSFORM_URIS)
    if unexpected:
        raise MessageError(f"{name}'s signature uses transforms not accepted: {unexpected}")


def _method(
    algorithm: str,
    trust: Trust,
    what: str,
    kind: str,
    sha2: tuple[Transform, ...],
    sha1: tuple[Transform, ...],
) -> Transform:
    for transform in sha2:
        if transform.href == algorithm:
            return transform
    for transform in sha1:
        if transform.href == algorithm:
            if trust.allow_sha1:
                return transform
            raise AlgorithmRefusedError(what, kind, algorithm, sha1=True)
    raise AlgorithmRefusedError(what, kind, algorithm, sha1=False)


def signature_method(algorithm: str, trust: Trust, what: str) -> Transform:
    """The transform of signature algorithm ``algorithm`` if accepted from this SP;
    otherwise :class:`AlgorithmRefusedError` naming it (and the SHA-1 setting)."""
    return _method(algorithm, trust, what, "signature", _SHA2_SIGNATURES, _SHA1_SIGNATURES)


def _check_algorithms(signed_info: etree._Element, trust: Trust, what: str) -> Transform:
    """The signature method's transform, once every algorithm ``SignedInfo`` names is accepted."""
    canonicalization = signed_info.find(f"{_DS}CanonicalizationMethod")
    c14n = canonicalization.get("Algorithm", "") if canonicalization is not None else ""
    if c14n not in _CANONICALIZATION_URIS:
        raise MessageError(
            f"{what} uses the canonicalization {printable(c14n, 200) or '(none)'}, not accepted "
            "(exclusive or inclusive C14N without comments)"
        )
    method = signed_info.find(f"{_DS}SignatureMethod")
    transform = signature_method(
        method.get("Algorithm", "") if method is not None else "", trust, what
    )
    for digest in signed_info.iterfind(f"{_DS}Reference/{_DS}DigestMethod"):
        _method(digest.get("Algorithm", ""), trust, what, "digest", _SHA2_DIGESTS, _SHA1_DIGESTS)
    return transform


def verify_enveloped(element: etree._Element, trust: Trust) -> None:
    """Check that ``element`` carries a valid enveloped signature by one of ``trust``'s
    certificates, with accepted algorithms.

    Raises :class:`MessageError` naming what is wrong (never quoting the message); a
    :class:`SignatureRefusedError` says whether the algorithm, the key or the content is
    to blame.
    """
    name = etree.QName(element).localname
    signature = enveloped_signature(element)
    if signature is None:
        raise MessageError(f"{name} is not signed")
    _check_reference(element, signature)
    if not trust.keys:
        raise MessageError(f"no certificate to verify the {name}'s signature with")
    what = f"{name}'s signature"
    signed_info = signature.find(f"{_DS}SignedInfo")
    assert signed_info is not None  # _check_reference found its Reference
    transform = _check_algorithms(signed_info, trust, what)
    signatures = (*_SHA2_SIGNATURES, *(_SHA1_SIGNATURES if trust.allow_sha1 else ()))
    digests = (*_SHA2_DIGESTS, *(_SHA1_DIGESTS if trust.allow_sha1 else ()))
    for key in trust.keys:
        context = xmlsec.SignatureContext()
        context.key = key
        context.register_id(element, "ID")
        for accepted in (*_CANONICALIZATIONS, *signatures):
            context.enable_signature_transform(accepted)
        for accepted in (_C.TransformEnveloped, *_CANONICALIZATIONS, *digests):
            context.enable_reference_transform(accepted)
        try:
            context.verify(signature)
        except xmlsec.Error:
            continue
        return
    raise diagnose(signature, signed_info, transform, trust, name)


def sign_binary(data: bytes, key: xmlsec.Key) -> bytes:
    """An RSA-SHA256 signature of ``data`` (the Redirect binding's query string)."""
    context = xmlsec.SignatureContext()
    context.key = key
    return context.sign_binary(data, _C.TransformRsaSha256)
