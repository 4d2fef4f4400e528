"""XML signatures (enveloped, exclusive C14N, RSA-SHA256, SHA-256) and Redirect-binding
signatures, made and checked in process with python-xmlsec.

Verification trusts only the keys it is given (never a key or certificate inside the
message) and only a signature that covers the very element being read: an enveloped
``<ds:Signature>`` that is a child of that element, with one ``Reference`` whose URI is
``#`` + that element's ``ID``, an ``ID`` no other element of the document repeats, and
no transform beyond enveloped-signature and canonicalization. That closes the signature
wrapping attacks, where a signature over one element is shown next to another.
"""

from __future__ import annotations

from collections.abc import Sequence

import xmlsec
from lxml import etree

from protocols.saml.parsing import MessageError
from protocols.saml.uris import DSIG_NS

__all__ = [
    "enveloped_signature",
    "sign_binary",
    "sign_enveloped",
    "verify_enveloped",
]

_C = xmlsec.constants
_DS = f"{{{DSIG_NS}}}"

#: What a verified signature may use: SHA-2 only, canonicalization without comments.
_SIGNATURE_TRANSFORMS = (
    _C.TransformExclC14N,
    _C.TransformInclC14N,
    _C.TransformRsaSha256,
    _C.TransformRsaSha384,
    _C.TransformRsaSha512,
    _C.TransformEcdsaSha256,
    _C.TransformEcdsaSha384,
    _C.TransformEcdsaSha512,
)
_REFERENCE_TRANSFORMS = (
    _C.TransformEnveloped,
    _C.TransformExclC14N,
    _C.TransformInclC14N,
    _C.TransformSha256,
    _C.TransformSha384,
    _C.TransformSha512,
)
_ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
_REFERENCE_TRANSFORM_URIS = frozenset(
    {
        _ENVELOPED,
        "http://www.w3.org/2001/10/xml-exc-c14n#",
        "http://www.w3.org/TR/2001/REC-xml-c14n-20010315",
    }
)


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


def verify_enveloped(element: etree._Element, keys: Sequence[xmlsec.Key]) -> None:
    """Check that ``element`` carries a valid enveloped signature by one of ``keys``.

    Raises :class:`MessageError` naming what is wrong (never quoting the message).
    """
    name = etree.QName(element).localname
    signature = enveloped_signature(element)
    if signature is None:
        raise MessageError(f"{name} is not signed")
    _check_reference(element, signature)
    if not keys:
        raise MessageError(f"no certificate to verify the {name}'s signature with")
    for key in keys:
        context = xmlsec.SignatureContext()
        context.key = key
        context.register_id(element, "ID")
        for transform in _SIGNATURE_TRANSFORMS:
            context.enable_signature_transform(transform)
        for transform in _REFERENCE_TRANSFORMS:
            context.enable_reference_transform(transform)
        try:
            context.verify(signature)
        except xmlsec.Error:
            continue
        return
    raise MessageError(
        f"{name}'s signature does not verify against the SP certificate "
        "(wrong key, altered content, or an algorithm other than RSA/ECDSA with SHA-2)"
    )


def sign_binary(data: bytes, key: xmlsec.Key) -> bytes:
    """An RSA-SHA256 signature of ``data`` (the Redirect binding's query string)."""
    context = xmlsec.SignatureContext()
    context.key = key
    return context.sign_binary(data, _C.TransformRsaSha256)
