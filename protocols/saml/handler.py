"""The SAML protocol handler: signed LogoutRequests over SOAP, HTTP-Redirect and HTTP-POST."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from protocols.base import (
    BackchannelRequest,
    BackchannelResponse,
    Channel,
    FrontchannelAnswer,
    FrontchannelEntry,
    HostInfo,
    LogoutContext,
    ProtocolHandler,
    ProviderInfo,
    ProviderSessionInfo,
    classify_status,
)
from protocols.keyfiles import KeyDirectory
from protocols.saml.bindings import (
    SOAP_HEADERS,
    post_value,
    redirect_url,
    serialize,
    soap_body,
    soap_envelope,
)
from protocols.saml.frontchannel import read_frontchannel_answer
from protocols.saml.identity import IdentitySource
from protocols.saml.logout_request import LogoutRequest, NameId, logout_request, reason_for
from protocols.saml.logout_response import logout_response, read_logout_response
from protocols.saml.metadata import endpoints, idp_metadata
from protocols.saml.parsing import MessageError, parse_xml
from protocols.saml.settings import (
    LogoutMethod,
    SamlIdentifiers,
    SamlProviderSettings,
    SamlSettings,
    SlsBinding,
    parse_provider_settings,
    parse_stored_settings,
)
from protocols.saml.signing import sign_enveloped
from protocols.validation import stored_identifiers
from schemas.errors import PermanentDeliveryError, Problem

__all__ = ["SamlHandler"]

_CHANNELS = {
    LogoutMethod.BACKCHANNEL: Channel.BACKCHANNEL,
    LogoutMethod.FRONTCHANNEL_IFRAME: Channel.FRONTCHANNEL_IFRAME,
    LogoutMethod.FRONTCHANNEL_NATIVE: Channel.FRONTCHANNEL_NATIVE,
}


class SamlHandler(ProtocolHandler[SamlSettings]):
    """SAML 2.0 Single Logout, the IdP (session authority) side."""

    protocol = "saml"
    contract_version = "2.0"
    settings_model = SamlSettings
    identifier_model = SamlIdentifiers

    def __init__(self, settings: SamlSettings, host: HostInfo) -> None:
        super().__init__(settings, host)
        self.identity = IdentitySource(settings, host)
        if self.identity.configured:
            self.identity.load()  # a configured key must load now: a bad one stops the worker

    def start(self) -> None:
        """Load the IdP's key and certificate, generating a self-signed pair if none."""
        self.identity.load()

    def key_directories(self) -> list[KeyDirectory]:
        """``<data_dir>/saml-idp`` unless the key and certificate are configured: the
        generated pair is kept (and locked while it is made or read) there."""
        if self.settings.key_file is not None:
            return []
        directory = self.host.data_dir / "saml-idp"
        return [KeyDirectory(directory, "key_file and cert_file of [protocols.saml]")]

    def validate_settings(self, provider: str, settings: Mapping[str, Any]) -> Any:
        return parse_provider_settings(provider, settings)

    def stored_settings(self, provider: str, settings: Mapping[str, Any]) -> Any:
        """The stored settings hold the SP's certificate as PEM: no file is read."""
        return parse_stored_settings(provider, settings)

    def outgoing_urls(self, settings: Any) -> dict[str, str]:
        """The SLS URL when the SOAP binding sends to it (Redirect and POST: the browser)."""
        sp: SamlProviderSettings = settings
        return {"sls_url": sp.sls_url} if sp.sls_binding is SlsBinding.SOAP else {}

    def validate_provider_session(
        self, provider: ProviderInfo, identifiers: SamlIdentifiers
    ) -> list[Problem]:
        """A LogoutRequest names the session by the ``NameID`` issued to the SP (SAML Core
        §3.7.1), so ``name_id`` is required; ``session_index`` narrows it to one session
        (without it the SP ends all of that NameID's sessions)."""
        problems: list[Problem] = []
        if not identifiers.name_id:
            problems.append(
                Problem(
                    "",
                    "name_id",
                    "required: a LogoutRequest names the NameID issued to the SP (give it, "
                    "with name_id_format and session_index as in the assertion)",
                )
            )
        return problems

    def channel(self, provider: ProviderInfo) -> Channel:
        sp: SamlProviderSettings = provider.settings
        return _CHANNELS[sp.method]

    def metadata(self) -> bytes:
        """The IdP's metadata document (``saml metadata``)."""
        slo, sso = endpoints(self.settings, self.host.issuer)
        return serialize(idp_metadata(self.identity.current, slo=slo, sso=sso), pretty=True)

    def logout_request(
        self, provider: ProviderInfo, session: ProviderSessionInfo, context: LogoutContext
    ) -> LogoutRequest:
        """An unsigned LogoutRequest for exactly this provider session (fresh ``ID``)."""
        sp: SamlProviderSettings = provider.settings
        ids = stored_identifiers(SamlIdentifiers, session.identifiers, self.protocol)
        if ids.name_id is None:
            raise PermanentDeliveryError("the provider session has no name_id")
        return logout_request(
            issuer=self.identity.current.entity_id,
            destination=sp.sls_url,
            name_id=NameId(
                ids.name_id,
                ids.name_id_format,
                ids.name_qualifier,
                ids.sp_name_qualifier,
            ),
            session_index=ids.session_index,
            reason=reason_for(context.event_type),
            now=context.now,
            lifetime=self.settings.request_lifetime,
        )

    def _sign(self, sp: SamlProviderSettings, built: LogoutRequest) -> None:
        """Sign ``built`` in place (enveloped, after ``Issuer``) unless ``sign_requests`` is off."""
        if sp.sign_requests:
            sign_enveloped(built.element, self.identity.current.signing_key, after=built.issuer)

    def backchannel_request(
        self, provider: ProviderInfo, session: ProviderSessionInfo, context: LogoutContext
    ) -> BackchannelRequest:
        sp: SamlProviderSettings = provider.settings
        if sp.sls_binding is not SlsBinding.SOAP:
            raise PermanentDeliveryError(
                f"sls_binding {sp.sls_binding.value!r} is shown to the browser, not sent over SOAP"
            )
        built = self.logout_request(provider, session, context)
        self._sign(sp, built)
        return BackchannelRequest(
            url=sp.sls_url,
            content=soap_envelope(built.element),
            headers=SOAP_HEADERS,
            reference=built.id,
        )

    def interpret_response(
        self,
        provider: ProviderInfo,
        session: ProviderSessionInfo,
        request: BackchannelRequest,
        response: BackchannelResponse,
        context: LogoutContext,
    ) -> None:
        """HTTP statuses as every handler reads them; a 200 must carry a LogoutResponse that
        answers this request, comes from this SP (signed when required) and says Success."""
        status = response.status_code
        if status != 200:
            classify_status(response, context.now)  # raises, except for 204
            raise PermanentDeliveryError(
                f"HTTP {status} without a LogoutResponse", status_code=status
            )
        sp: SamlProviderSettings = provider.settings
        if request.reference is None:
            raise PermanentDeliveryError("the request has no ID to match the response to")
        try:
            envelope = parse_xml(
                response.content, limit=self.host.response_body_limit, what="the SOAP response"
            )
            answer = read_logout_response(
                soap_body(envelope),
                request_id=request.reference,
                sp_entity_id=sp.entity_id,
                trust=sp.trust,
                require_signature=sp.require_signed_responses,
            )
        except MessageError as exc:
            raise PermanentDeliveryError(_unreadable(exc, response), status_code=status) from exc
        if not answer.success:
            raise PermanentDeliveryError(
                f"LogoutResponse status {answer}",
                status_code=status,
                facts={"sp_status": answer.audit_detail()},
            )

    def frontchannel_entry(
        self, provider: ProviderInfo, session: ProviderSessionInfo, context: LogoutContext
    ) -> FrontchannelEntry:
        """The signed redirect URL (iframe or top-level), or the POST form's values.

        ``RelayState`` is the delivery id, so the SP's answer can be matched to the delivery.
        """
        sp: SamlProviderSettings = provider.settings
        channel = _CHANNELS[sp.method]
        if channel is Channel.BACKCHANNEL:
            raise PermanentDeliveryError("the SP is logged out over SOAP, not in the browser")
        built = self.logout_request(provider, session, context)
        relay_state = context.delivery_id
        if sp.sls_binding is SlsBinding.POST:
            self._sign(sp, built)
            return FrontchannelEntry(
                provider=provider.name,
                protocol=self.protocol,
                channel=channel,
                binding="post",
                url=sp.sls_url,
                form={"SAMLRequest": post_value(built.element), "RelayState": relay_state},
            )
        url = redirect_url(
            sp.sls_url,
            built.element,
            relay_state=relay_state,
            key=self.identity.current.signing_key if sp.sign_requests else None,
        )
        return FrontchannelEntry(
            provider=provider.name,
            protocol=self.protocol,
            channel=channel,
            binding="iframe" if channel is Channel.FRONTCHANNEL_IFRAME else "redirect",
            url=url,
        )

    def answered_delivery(self, answer: FrontchannelAnswer) -> str | None:
        """The ``RelayState`` of an SP's LogoutResponse: our native steps carry the
        delivery id there."""
        if answer.field("SAMLResponse") is None:
            return None
        relay_state = answer.field("RelayState")
        return relay_state or None

    def frontchannel_answer(
        self, provider: ProviderInfo, sent: FrontchannelEntry, answer: FrontchannelAnswer
    ) -> None:
        """The SP's LogoutResponse to a native step, by HTTP-POST or HTTP-Redirect: read
        with the hardened parser, its signature checked as for SOAP (or over the query),
        ``InResponseTo`` the step's request ``ID``; only ``Success`` returns."""
        sp: SamlProviderSettings = provider.settings
        try:
            status = read_frontchannel_answer(sp, sent, answer, limit=self.host.response_body_limit)
        except MessageError as exc:
            raise PermanentDeliveryError(str(exc)) from exc
        if not status.success:
            raise PermanentDeliveryError(
                f"LogoutResponse status {status}", facts={"sp_status": status.audit_detail()}
            )

    def logout_response_entry(
        self,
        provider: ProviderInfo,
        *,
        in_response_to: str,
        partial: bool,
        relay_state: str | None,
        now: datetime,
    ) -> FrontchannelEntry:
        """The last step of a logout an SP started in the browser: the IdP's signed
        LogoutResponse to it, ``Success`` (with ``PartialLogout`` when ``partial``), by the
        SP's binding: a signed redirect URL, or a POST form with ``SAMLResponse``.

        An SP that sent its LogoutRequest over SOAP gets the answer in the HTTP response:
        ``soap_envelope(logout_response(...))``.
        """
        sp: SamlProviderSettings = provider.settings
        if sp.sls_binding is SlsBinding.SOAP:
            raise ValueError("an SP using SOAP gets its LogoutResponse in the SOAP response")
        identity = self.identity.current
        key = identity.signing_key if sp.sign_requests else None
        post = sp.sls_binding is SlsBinding.POST
        response = logout_response(
            issuer=identity.entity_id,
            destination=sp.sls_url,
            in_response_to=in_response_to,
            partial=partial,
            now=now,
            key=key if post else None,
        )
        if post:
            return FrontchannelEntry(
                provider=provider.name,
                protocol=self.protocol,
                channel=Channel.FRONTCHANNEL_NATIVE,
                binding="post",
                url=sp.sls_url,
                form=_form(SAMLResponse=post_value(response), RelayState=relay_state),
            )
        url = redirect_url(
            sp.sls_url, response, parameter="SAMLResponse", relay_state=relay_state, key=key
        )
        return FrontchannelEntry(
            provider=provider.name,
            protocol=self.protocol,
            channel=Channel.FRONTCHANNEL_NATIVE,
            binding="redirect",
            url=url,
        )


def _unreadable(exc: MessageError, response: BackchannelResponse) -> str:
    """Why a SOAP answer was refused; an HTML page says so first (an SP's error page with
    status 200, as SimpleSAMLphp 1.19 answers SOAP logout, would otherwise read as a
    refused DTD)."""
    media_type = response.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "text/html":
        return str(exc)
    return (
        "the SOAP response is an HTML page (Content-Type: text/html), not a SOAP envelope: "
        f"the SP answered with an error or sign-in page ({exc})"
    )


def _form(**fields: str | None) -> dict[str, str]:
    """A POST form's fields, those without a value left out."""
    return {name: value for name, value in fields.items() if value is not None}
