"""A SAML service provider's logout settings, validated when providers are loaded.

``sp_certificate`` names a PEM file (or holds the PEM itself); it is read and checked on
load and stored as PEM, so workers need not see the file. ``metadata_file`` (or
``metadata``) fills the settings from the SP's SAML metadata on load
(:mod:`protocols.saml.from_metadata`); what is stored is the result, never the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, Self
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from protocols.files import CERTIFICATE_MAX, UnreadableFileError, read_regular_file
from protocols.saml.trust import Trust
from protocols.saml.uris import RSA_MIN_BITS
from protocols.validation import check_uri, input_error, json_text, uri_form
from schemas.durations import WholeSeconds
from schemas.fields import LongIdentifier

__all__ = [
    "METHOD_BINDINGS",
    "AdvertisedAlgorithms",
    "LogoutMethod",
    "SamlIdentifiers",
    "SamlProviderSettings",
    "SamlSettings",
    "SloEndpoint",
    "SlsBinding",
    "certificate_pem",
    "load_certificates",
    "parse_provider_settings",
    "parse_stored_settings",
]

_PEM_CERTIFICATE = "-----BEGIN CERTIFICATE-----"
#: The validation context of stored settings: no file is read (the request path).
STORED = {"stored": True}


class SlsBinding(StrEnum):
    """How LogoutRequests reach the SP's Single Logout Service."""

    SOAP = "soap"
    REDIRECT = "redirect"
    POST = "post"


class LogoutMethod(StrEnum):
    BACKCHANNEL = "backchannel"
    FRONTCHANNEL_IFRAME = "frontchannel_iframe"
    FRONTCHANNEL_NATIVE = "frontchannel_native"


#: The bindings each logout method can use, the one it prefers first.
METHOD_BINDINGS = {
    LogoutMethod.BACKCHANNEL: (SlsBinding.SOAP,),
    LogoutMethod.FRONTCHANNEL_IFRAME: (SlsBinding.REDIRECT,),
    LogoutMethod.FRONTCHANNEL_NATIVE: (SlsBinding.POST, SlsBinding.REDIRECT),
}
_DEFAULT_METHOD = {
    SlsBinding.SOAP: LogoutMethod.BACKCHANNEL,
    SlsBinding.REDIRECT: LogoutMethod.FRONTCHANNEL_IFRAME,
    SlsBinding.POST: LogoutMethod.FRONTCHANNEL_NATIVE,
}


IdpBinding = Literal["soap", "redirect", "post"]


class SamlIdentifiers(BaseModel):
    """A SAML provider session's identifiers: the ``NameID`` issued to the SP (with its
    format and qualifiers) and the ``SessionIndex`` of the assertion."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name_id: str | None = Field(default=None, min_length=1, max_length=1024)
    name_id_format: str | None = Field(default=None, min_length=1, max_length=255)
    name_qualifier: str | None = Field(default=None, min_length=1, max_length=1024)
    sp_name_qualifier: str | None = Field(default=None, min_length=1, max_length=1024)
    session_index: str | None = Field(default=None, min_length=1, max_length=255)


class SamlSettings(BaseModel):
    """The SAML handler's own settings (the IdP side): ``[protocols.saml]`` in the settings
    file, ``LOGOUT_SAML_<FIELD>`` in the environment."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    entity_id: str | None = Field(
        default=None, min_length=1, max_length=1024, description="default: the issuer"
    )
    key_file: Path | None = Field(default=None, description="PEM RSA key signing SAML")
    cert_file: Path | None = Field(default=None, description="its PEM X.509 certificate")
    request_lifetime: WholeSeconds = Field(
        default=120, ge=10, le=3600, description="seconds a LogoutRequest is valid"
    )
    slo_urls: dict[IdpBinding, str] = Field(
        default_factory=dict, description="the IdP's SLO endpoints in its metadata"
    )
    sso_urls: dict[IdpBinding, str] = Field(
        default_factory=dict, description="the IdP's SSO endpoints in its metadata"
    )

    _json = field_validator("slo_urls", "sso_urls", mode="before")(json_text)

    @field_validator("slo_urls", "sso_urls")
    @classmethod
    def _absolute_urls(cls, value: dict[str, str]) -> dict[str, str]:
        for binding, url in value.items():
            parts = urlsplit(url)
            if parts.scheme not in ("https", "http") or not parts.netloc:
                raise ValueError(f"{binding}: {url!r} is not an absolute http(s) URL")
        return value

    @model_validator(mode="after")
    def _pair(self) -> Self:
        if (self.key_file is None) != (self.cert_file is None):
            raise ValueError("key_file and cert_file go together: set both or neither")
        return self

    def entity_id_for(self, issuer: str) -> str:
        """``entity_id``, else the ``issuer``."""
        return self.entity_id or issuer

    def endpoints_for(self, issuer: str) -> tuple[dict[str, str], dict[str, str]]:
        """The SLO and SSO URLs by binding: as configured, else ``<issuer>/saml/slo`` and
        ``<issuer>/saml/sso`` for the Redirect and POST bindings."""
        return _endpoints(self.slo_urls, issuer, "slo"), _endpoints(self.sso_urls, issuer, "sso")


def _endpoints(configured: Mapping[IdpBinding, str], issuer: str, service: str) -> dict[str, str]:
    if configured:
        return {str(binding): url for binding, url in configured.items()}
    base = issuer.rstrip("/")
    return {binding: f"{base}/saml/{service}" for binding in ("redirect", "post")}


def load_certificates(pem: str) -> list[x509.Certificate]:
    """The certificates of a PEM text (one, or several during an SP's key rollover)."""
    try:
        certificates = x509.load_pem_x509_certificates(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise ValueError("not a PEM X.509 certificate") from exc
    for certificate in certificates:
        key = certificate.public_key()
        if isinstance(key, rsa.RSAPublicKey):
            if key.key_size < RSA_MIN_BITS:
                raise ValueError(
                    f"an RSA key of {key.key_size} bits; at least {RSA_MIN_BITS} required"
                )
        elif not isinstance(key, ec.EllipticCurvePublicKey):
            raise ValueError("the certificate's key is neither RSA nor EC")
    return certificates


def certificate_pem(value: str) -> str:
    """The certificates of ``value`` (a PEM file's path, or the PEM), checked, as PEM text;
    ``ValueError`` saying what is wrong."""
    if value.lstrip().startswith(_PEM_CERTIFICATE):
        pem = value
    else:
        try:
            pem = read_regular_file(value, CERTIFICATE_MAX).decode("ascii")
        except UnreadableFileError as exc:
            raise ValueError(f"cannot read {value}: {exc}") from exc
        except UnicodeDecodeError as exc:
            raise ValueError(f"cannot read {value}: not a PEM text file") from exc
    certificates = load_certificates(pem)
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in certificates)


class SloEndpoint(BaseModel):
    """One of the SP's Single Logout endpoints, as its metadata lists them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    binding: SlsBinding
    location: str = Field(min_length=1)
    response_location: str | None = None

    _uri_form = field_validator("location", "response_location")(uri_form)


class AdvertisedAlgorithms(BaseModel):
    """The algorithms an SP's metadata advertises (algsupport extension), as URIs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    signing: tuple[str, ...] = ()
    digest: tuple[str, ...] = ()


class SamlProviderSettings(BaseModel):
    """One SP's Single Logout registration."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    entity_id: LongIdentifier
    sls_url: str = Field(min_length=1)
    sls_binding: SlsBinding
    logout_method: LogoutMethod | None = Field(
        default=None,
        description="Default: backchannel for soap, frontchannel_iframe for redirect, "
        "frontchannel_native for post.",
    )
    sp_certificate: str | None = Field(
        default=None, description="Path to the SP's signing certificate (PEM), or the PEM."
    )
    slo_endpoints: tuple[SloEndpoint, ...] = Field(
        default=(), description="Every SingleLogoutService of the SP's metadata (kept)."
    )
    advertised_algorithms: AdvertisedAlgorithms | None = Field(
        default=None, description="What the SP's metadata advertises (kept for later use)."
    )
    sign_requests: bool = True
    require_signed_responses: bool = False
    allow_sha1_signatures: bool = Field(
        default=False,
        description="Accept RSA-SHA1/ECDSA-SHA1 signatures and SHA-1 digests from this SP.",
    )
    allow_http: bool = False

    @field_validator("sp_certificate")
    @classmethod
    def _read_certificate(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if info.context == STORED and not value.lstrip().startswith(_PEM_CERTIFICATE):
            raise ValueError("stored settings hold the PEM, not a path; run providers load again")
        return certificate_pem(value)

    _uri_form = field_validator("sls_url")(uri_form)

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        check_uri("sls_url", self.sls_url, self.allow_http)
        allowed = METHOD_BINDINGS[self.method]
        if self.sls_binding not in allowed:
            names = " or ".join(repr(b.value) for b in allowed)
            raise ValueError(
                f"sls_binding: logout_method {self.method.value!r} needs sls_binding {names}, "
                f"not {self.sls_binding.value!r}"
            )
        if self.require_signed_responses and self.sp_certificate is None:
            raise ValueError("sp_certificate: required by require_signed_responses = true")
        if self.allow_sha1_signatures and self.sp_certificate is None:
            raise ValueError(
                "sp_certificate: required by allow_sha1_signatures = true (without a "
                "certificate no signature is checked; give it, or drop the setting)"
            )
        return self

    @property
    def method(self) -> LogoutMethod:
        """The logout method in force (explicit, or the binding's natural one)."""
        return self.logout_method or _DEFAULT_METHOD[self.sls_binding]

    @cached_property
    def trust(self) -> Trust:
        """What the SP's signatures are checked against (no certificate: nothing verifies)."""
        certificates = load_certificates(self.sp_certificate) if self.sp_certificate else []
        return Trust.of(certificates, allow_sha1=self.allow_sha1_signatures)


def parse_stored_settings(provider: str, settings: Any) -> SamlProviderSettings:
    """Settings as :func:`parse_provider_settings` returned them and the host stored them:
    validated again without reading any file."""
    try:
        return SamlProviderSettings.model_validate(settings, context=STORED)
    except ValidationError as exc:
        raise input_error(exc, provider, SamlProviderSettings) from exc


def parse_provider_settings(provider: str, settings: Any) -> SamlProviderSettings:
    """Validate ``settings``, filled from the SP's metadata when they name it (``metadata_file``
    or ``metadata``); raise :class:`InputError` naming the provider and field of every problem.
    """
    from protocols.saml.from_metadata import METADATA_FIELDS, with_metadata

    if isinstance(settings, Mapping) and METADATA_FIELDS & settings.keys():
        return with_metadata(provider, settings, datetime.now(UTC))
    try:
        return SamlProviderSettings.model_validate(settings)
    except ValidationError as exc:
        raise input_error(exc, provider, SamlProviderSettings, METADATA_FIELDS) from exc
