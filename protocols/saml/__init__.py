"""SAML 2.0 Single Logout: signed LogoutRequests over SOAP, HTTP-Redirect and HTTP-POST."""

from protocols.saml.bindings import (
    MAX_RELAY_STATE,
    SOAP_HEADERS,
    post_value,
    redirect_url,
    serialize,
    soap_body,
    soap_envelope,
)
from protocols.saml.handler import SamlHandler
from protocols.saml.identity import (
    IdentitySource,
    IdpIdentity,
    generate_identity,
    load_identity,
    self_signed,
)
from protocols.saml.logout_request import REASONS, LogoutRequest, NameId, logout_request
from protocols.saml.logout_response import LogoutStatus, logout_response, read_logout_response
from protocols.saml.metadata import endpoints, idp_metadata
from protocols.saml.parsing import MessageError, parse_xml
from protocols.saml.refusals import (
    AlgorithmRefusedError,
    DigestMismatchError,
    KeyMismatchError,
    SignatureRefusedError,
)
from protocols.saml.settings import (
    LogoutMethod,
    SamlIdentifiers,
    SamlProviderSettings,
    SamlSettings,
    SlsBinding,
    parse_provider_settings,
)
from protocols.saml.signing import sign_enveloped, verify_enveloped
from protocols.saml.trust import Trust

__all__ = [
    "MAX_RELAY_STATE",
    "REASONS",
    "SOAP_HEADERS",
    "AlgorithmRefusedError",
    "DigestMismatchError",
    "IdentitySource",
    "IdpIdentity",
    "KeyMismatchError",
    "LogoutMethod",
    "LogoutRequest",
    "LogoutStatus",
    "MessageError",
    "NameId",
    "SamlHandler",
    "SamlIdentifiers",
    "SamlProviderSettings",
    "SamlSettings",
    "SignatureRefusedError",
    "SlsBinding",
    "Trust",
    "endpoints",
    "generate_identity",
    "idp_metadata",
    "load_identity",
    "logout_request",
    "logout_response",
    "parse_provider_settings",
    "parse_xml",
    "post_value",
    "read_logout_response",
    "redirect_url",
    "self_signed",
    "serialize",
    "sign_enveloped",
    "soap_body",
    "soap_envelope",
    "verify_enveloped",
]
