"""The names SAML 2.0 and XML-DSig give things: namespaces, bindings, statuses, reasons."""

from __future__ import annotations

from typing import Final

__all__ = [
    "ALGSUPPORT_NS",
    "ASSERTION_NS",
    "BINDING_POST",
    "BINDING_REDIRECT",
    "BINDING_SOAP",
    "DSIG_NS",
    "METADATA_NS",
    "PROTOCOL_NS",
    "REASON_ADMIN",
    "REASON_GLOBAL_TIMEOUT",
    "REASON_USER",
    "RSA_MIN_BITS",
    "RSA_SHA256",
    "SOAP_ACTION",
    "SOAP_ENV_NS",
    "STATUS_PARTIAL_LOGOUT",
    "STATUS_PREFIX",
    "STATUS_SUCCESS",
]

PROTOCOL_NS: Final = "urn:oasis:names:tc:SAML:2.0:protocol"
ASSERTION_NS: Final = "urn:oasis:names:tc:SAML:2.0:assertion"
METADATA_NS: Final = "urn:oasis:names:tc:SAML:2.0:metadata"
DSIG_NS: Final = "http://www.w3.org/2000/09/xmldsig#"
#: The SAML V2.0 Metadata Profile for Algorithm Support (``alg:SigningMethod``, ...).
ALGSUPPORT_NS: Final = "urn:oasis:names:tc:SAML:metadata:algsupport"
SOAP_ENV_NS: Final = "http://schemas.xmlsoap.org/soap/envelope/"

#: The ``SOAPAction`` of the SAML SOAP binding (Bindings §3.2.2.3).
SOAP_ACTION: Final = "http://www.oasis-open.org/committees/security"

BINDING_SOAP: Final = "urn:oasis:names:tc:SAML:2.0:bindings:SOAP"
BINDING_REDIRECT: Final = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
BINDING_POST: Final = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"

STATUS_PREFIX: Final = "urn:oasis:names:tc:SAML:2.0:status:"
STATUS_SUCCESS: Final = STATUS_PREFIX + "Success"
STATUS_PARTIAL_LOGOUT: Final = STATUS_PREFIX + "PartialLogout"

REASON_USER: Final = "urn:oasis:names:tc:SAML:2.0:logout:user"
REASON_ADMIN: Final = "urn:oasis:names:tc:SAML:2.0:logout:admin"
REASON_GLOBAL_TIMEOUT: Final = "urn:oasis:names:tc:SAML:2.0:logout:global-timeout"

#: The signature algorithm of every message we sign (``SigAlg`` of the Redirect binding too).
RSA_SHA256: Final = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"

#: The smallest RSA key accepted from an SP or for the IdP (advertised as ``MinKeySize``).
RSA_MIN_BITS: Final = 2048
