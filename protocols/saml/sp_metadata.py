"""Reading a service provider's SAML metadata (SAML Metadata §2.3, §2.4.4): what logging it
out needs.

Shibboleth SP and SimpleSAMLphp hand out an ``<md:EntityDescriptor>`` with one
``<md:SPSSODescriptor>``; a federation wraps many in ``<md:EntitiesDescriptor>``. From the
chosen SP this reads its ``entityID``, its ``SingleLogoutService`` endpoints in the bindings we
send (SOAP, HTTP-Redirect, HTTP-POST; others such as HTTP-Artifact are skipped), its signing
certificates (``KeyDescriptor`` with ``use="signing"`` or no ``use``) and the algorithms it
advertises (the algsupport extension, on the entity or its SP role).

The document is read with the hardened parser (no DTD, nothing external). A ``validUntil``
in the past, on the SP role or any element enclosing it, refuses it. With ``signers``, the
document must carry an enveloped signature by one of them, on the SP's ``EntityDescriptor``
or on the document's root (which encloses it); the signature is checked by the same code
that checks SPs' messages.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree

from protocols.saml.metadata import BINDINGS
from protocols.saml.parsing import MessageError, parse_xml
from protocols.saml.signing import enveloped_signature, verify_enveloped
from protocols.saml.trust import Trust
from protocols.saml.uris import ALGSUPPORT_NS, DSIG_NS, METADATA_NS, PROTOCOL_NS

__all__ = ["METADATA_MAX", "SloEndpointInfo", "SpMetadata", "read_sp_metadata"]

#: The most read of an SP's metadata (a file or the text): one entity is a few KiB, a
#: federation's aggregate of thousands is larger; extract the entity from such an aggregate.
METADATA_MAX: Final = 16 * 1024 * 1024

_MD = f"{{{METADATA_NS}}}"
_DS = f"{{{DSIG_NS}}}"
_ALG = f"{{{ALGSUPPORT_NS}}}"
_BINDING_NAMES = {uri: name for name, uri in BINDINGS.items()}
#: How many entity ids a message lists before "...".
_LISTED = 5


@dataclass(frozen=True, slots=True)
class SloEndpointInfo:
    """One ``SingleLogoutService``: its binding's name (``soap``, ``redirect``, ``post``)."""

    binding: str
    location: str
    response_location: str | None


@dataclass(frozen=True, slots=True)
class SpMetadata:
    """What an SP's metadata says about logging it out."""

    entity_id: str
    slo_endpoints: tuple[SloEndpointInfo, ...]
    #: Bindings of ``SingleLogoutService`` endpoints we do not send (URIs), for messages.
    other_slo_bindings: tuple[str, ...]
    #: Signing certificates, PEM, in document order.
    certificates: tuple[str, ...]
    signing_methods: tuple[str, ...]
    digest_methods: tuple[str, ...]


def read_sp_metadata(
    data: bytes,
    *,
    what: str,
    entity_id: str | None = None,
    signers: Trust | None = None,
    now: datetime,
) -> SpMetadata:
    """Read the SP ``entity_id`` (or the only SP) from the metadata ``data``.

    ``what`` names the document in messages. Raises :class:`MessageError` saying what is
    wrong and how to fix it.
    """
    root = parse_xml(data, limit=METADATA_MAX, what=what)
    entity = _entity(root, entity_id, what)
    role = _sp_role(entity, what)
    _check_validity(role, now, what)
    if signers is not None:
        _check_signature(entity, signers, what)
    endpoints, others = _slo_endpoints(role, what)
    algorithms = [*_algorithms(entity), *_algorithms(role)]
    return SpMetadata(
        entity_id=str(entity.get("entityID")),
        slo_endpoints=endpoints,
        other_slo_bindings=others,
        certificates=_signing_certificates(role, what),
        signing_methods=_unique(uri for tag, uri in algorithms if tag == "SigningMethod"),
        digest_methods=_unique(uri for tag, uri in algorithms if tag == "DigestMethod"),
    )


def _entity(root: etree._Element, entity_id: str | None, what: str) -> etree._Element:
    """The SP's ``EntityDescriptor``: the root, or the one (or the named one) it holds."""
    if root.tag == f"{_MD}EntityDescriptor":
        found = root.get("entityID")
        if entity_id is not None and found != entity_id:
            raise MessageError(
                f"{what} describes {found!r}, not entity_id {entity_id!r}; fix entity_id or "
                "leave it out to take the metadata's"
            )
        candidates = [root]
    elif root.tag == f"{_MD}EntitiesDescriptor":
        candidates = [
            e
            for e in root.iter(f"{_MD}EntityDescriptor")
            if e.find(f"{_MD}SPSSODescriptor") is not None
        ]
        if entity_id is not None:
            candidates = [e for e in candidates if e.get("entityID") == entity_id]
            if not candidates:
                raise MessageError(f"{what} holds no service provider {entity_id!r}")
        elif len(candidates) > 1:
            names = [str(e.get("entityID")) for e in candidates]
            listed = ", ".join(names[:_LISTED]) + (", ..." if len(names) > _LISTED else "")
            raise MessageError(
                f"{what} holds {len(names)} service providers ({listed}); set entity_id to "
                "the one this provider is"
            )
        elif not candidates:
            raise MessageError(f"{what} holds no service provider (no SPSSODescriptor)")
    else:
        raise MessageError(
            f"{what} is not SAML metadata: its root is {etree.QName(root).localname!r}, not "
            "md:EntityDescriptor or md:EntitiesDescriptor"
        )
    entity = candidates[0]
    if not entity.get("entityID"):
        raise MessageError(f"{what}: the EntityDescriptor has no entityID")
    return entity


def _sp_role(entity: etree._Element, what: str) -> etree._Element:
    """The entity's ``SPSSODescriptor`` that speaks SAML 2.0."""
    roles = entity.findall(f"{_MD}SPSSODescriptor")
    if not roles:
        raise MessageError(
            f"{what}: {entity.get('entityID')!r} is no service provider (no SPSSODescriptor)"
        )
    for role in roles:
        if PROTOCOL_NS in (role.get("protocolSupportEnumeration") or "").split():
            return role
    raise MessageError(
        f"{what}: {entity.get('entityID')!r} does not support SAML 2.0 "
        f"(protocolSupportEnumeration lacks {PROTOCOL_NS})"
    )


def _check_validity(role: etree._Element, now: datetime, what: str) -> None:
    """Refuse the metadata when ``validUntil`` of the role or anything enclosing it passed."""
    for element in (role, *role.iterancestors()):
        text = element.get("validUntil")
        if text is None:
            continue
        try:
            until = datetime.fromisoformat(text.strip())
        except ValueError:
            raise MessageError(
                f"{what}: validUntil {text[:40]!r} on {etree.QName(element).localname} is no "
                "xs:dateTime"
            ) from None
        if until.tzinfo is None:
            until = until.replace(tzinfo=UTC)  # SAML times are UTC (SAML Core §1.3.3)
        if until <= now:
            raise MessageError(
                f"{what} expired at {until.isoformat()} (validUntil on "
                f"{etree.QName(element).localname}); fetch fresh metadata from the SP"
            )


def _check_signature(entity: etree._Element, signers: Trust, what: str) -> None:
    """The entity, or the root enclosing it, carries a valid signature by one of ``signers``."""
    root = entity.getroottree().getroot()
    signed = next(
        (e for e in (entity, root) if enveloped_signature(e) is not None),
        None,
    )
    if signed is None:
        raise MessageError(
            f"{what} is not signed, and metadata_signed_by requires a signature; get the "
            "signed metadata (or leave metadata_signed_by out to trust it unsigned)"
        )
    try:
        verify_enveloped(signed, signers)
    except MessageError as exc:
        raise MessageError(
            f"{what}: its signature is refused with the metadata_signed_by certificate: {exc}"
        ) from None


def _slo_endpoints(
    role: etree._Element, what: str
) -> tuple[tuple[SloEndpointInfo, ...], tuple[str, ...]]:
    """The ``SingleLogoutService`` endpoints in bindings we send, and the other bindings."""
    endpoints: list[SloEndpointInfo] = []
    others: list[str] = []
    for service in role.iterfind(f"{_MD}SingleLogoutService"):
        binding = service.get("Binding") or ""
        name = _BINDING_NAMES.get(binding)
        if name is None:
            others.append(binding)
            continue
        location = service.get("Location")
        if not location:
            raise MessageError(f"{what}: a SingleLogoutService ({name}) has no Location")
        endpoints.append(SloEndpointInfo(name, location, service.get("ResponseLocation")))
    return tuple(endpoints), tuple(others)


def _signing_certificates(role: etree._Element, what: str) -> tuple[str, ...]:
    """The PEM of each certificate in a signing (or unqualified) ``KeyDescriptor``."""
    pems: list[str] = []
    for descriptor in role.iterfind(f"{_MD}KeyDescriptor"):
        if descriptor.get("use", "signing") != "signing":
            continue
        for element in descriptor.iterfind(f"{_DS}KeyInfo/{_DS}X509Data/{_DS}X509Certificate"):
            try:
                der = base64.b64decode("".join((element.text or "").split()), validate=True)
                certificate = x509.load_der_x509_certificate(der)
            except (binascii.Error, ValueError):
                raise MessageError(
                    f"{what}: a signing KeyDescriptor's X509Certificate is not a base64 DER "
                    "certificate"
                ) from None
            pem = certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")
            if pem not in pems:
                pems.append(pem)
    return tuple(pems)


def _algorithms(element: etree._Element) -> list[tuple[str, str]]:
    """``(SigningMethod | DigestMethod, Algorithm)`` of the element's algsupport extension."""
    found = []
    for method in element.iterfind(f"{_MD}Extensions/*"):
        if not isinstance(method.tag, str) or not method.tag.startswith(_ALG):
            continue
        algorithm = method.get("Algorithm")
        if algorithm:
            found.append((etree.QName(method).localname, algorithm))
    return found


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    """``values`` in order, each once."""
    return tuple(dict.fromkeys(values))
