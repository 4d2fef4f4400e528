"""The IdP's SAML metadata (SAML Metadata §2.4.3): entity id, signing key, endpoints, and
the algorithms it signs with and accepts (SAML V2.0 Metadata Profile for Algorithm Support).

The algorithms sit in the ``<md:Extensions>`` of the ``EntityDescriptor`` (its first child,
as the metadata schema orders it): ``alg:DigestMethod`` elements, then ``alg:SigningMethod``
ones, each most preferred first. An SP reading them (Shibboleth SP 3 does) then signs its
messages to us with SHA-256 rather than its SHA-1 default.

The endpoints are the IdP web component's, not this service's: ``slo_urls`` and
``sso_urls`` of ``[protocols.saml]`` (binding → URL), by default ``<issuer>/saml/slo`` and
``<issuer>/saml/sso`` for the Redirect and POST bindings. Metadata needs at least one
``SingleSignOnService``.
"""

from __future__ import annotations

from collections.abc import Mapping

from lxml import etree

from protocols.saml.identity import IdpIdentity
from protocols.saml.settings import SamlSettings
from protocols.saml.signing import ACCEPTED_DIGESTS, ACCEPTED_SIGNATURES
from protocols.saml.uris import (
    ALGSUPPORT_NS,
    BINDING_POST,
    BINDING_REDIRECT,
    BINDING_SOAP,
    DSIG_NS,
    METADATA_NS,
    PROTOCOL_NS,
    RSA_MIN_BITS,
)

__all__ = ["BINDINGS", "endpoints", "idp_metadata"]

#: Binding names in settings → SAML binding URIs.
BINDINGS: Mapping[str, str] = {
    "soap": BINDING_SOAP,
    "redirect": BINDING_REDIRECT,
    "post": BINDING_POST,
}

_MD = f"{{{METADATA_NS}}}"
_DS = f"{{{DSIG_NS}}}"
_ALG = f"{{{ALGSUPPORT_NS}}}"


def endpoints(settings: SamlSettings, issuer: str) -> tuple[dict[str, str], dict[str, str]]:
    """The SingleLogoutService and SingleSignOnService URLs by binding name."""
    return settings.endpoints_for(issuer)


def idp_metadata(
    identity: IdpIdentity, *, slo: Mapping[str, str], sso: Mapping[str, str]
) -> etree._Element:
    """``<md:EntityDescriptor>`` with the algorithm support extension and one
    ``<md:IDPSSODescriptor>``."""
    nsmap = {"md": METADATA_NS, "ds": DSIG_NS, "alg": ALGSUPPORT_NS}
    root = etree.Element(f"{_MD}EntityDescriptor", nsmap=nsmap)
    root.set("entityID", identity.entity_id)
    extensions = etree.SubElement(root, f"{_MD}Extensions")
    for digest in ACCEPTED_DIGESTS:
        etree.SubElement(extensions, f"{_ALG}DigestMethod").set("Algorithm", digest)
    for signing in ACCEPTED_SIGNATURES:
        method = etree.SubElement(extensions, f"{_ALG}SigningMethod")
        method.set("Algorithm", signing)
        if "#rsa-" in signing:
            method.set("MinKeySize", str(RSA_MIN_BITS))
    idp = etree.SubElement(root, f"{_MD}IDPSSODescriptor")
    idp.set("protocolSupportEnumeration", PROTOCOL_NS)
    key = etree.SubElement(idp, f"{_MD}KeyDescriptor")
    key.set("use", "signing")
    x509 = etree.SubElement(etree.SubElement(key, f"{_DS}KeyInfo"), f"{_DS}X509Data")
    etree.SubElement(x509, f"{_DS}X509Certificate").text = identity.certificate_base64
    for tag, urls in (("SingleLogoutService", slo), ("SingleSignOnService", sso)):
        for binding, url in urls.items():
            service = etree.SubElement(idp, f"{_MD}{tag}")
            service.set("Binding", BINDINGS[binding])
            service.set("Location", url)
    return root
