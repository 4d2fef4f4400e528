"""The SSF transmitter as a protocol handler: each receiver's stream is a provider, and an
ended session is a CAEP ``session-revoked`` SET pushed to it (RFC 8935)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from protocols.base import (
    BackchannelRequest,
    BackchannelResponse,
    LogoutContext,
    ProviderInfo,
    ProviderSessionInfo,
)
from protocols.oidc.signing import SigningHandler
from protocols.ssf.push import classify_push, push_request
from protocols.ssf.settings import (
    SsfIdentifiers,
    SsfSettings,
    StreamSettings,
    parse_stream_settings,
)
from protocols.ssf.tokens import session_revoked_claims, sign_set, subject, verification_claims
from protocols.validation import stored_identifiers
from schemas.errors import PermanentDeliveryError

__all__ = ["SsfHandler"]


class SsfHandler(SigningHandler[SsfSettings]):
    """OpenID Shared Signals 1.0 transmitter: CAEP ``session-revoked`` over RFC 8935 push."""

    protocol = "ssf"
    contract_version = "2.1"
    settings_model = SsfSettings
    identifier_model = SsfIdentifiers
    keys_of = "oidc"  # SETs and logout tokens share one key ring, configured once

    def validate_settings(self, provider: str, settings: Mapping[str, Any]) -> Any:
        return parse_stream_settings(provider, settings)

    def outgoing_urls(self, settings: Any) -> dict[str, str]:
        stream: StreamSettings = settings
        return {"endpoint_url": stream.endpoint_url}

    def skip_reason(self, provider: ProviderInfo) -> str | None:
        """A paused or disabled stream, one that did not request ``session-revoked``, or
        whose ``authorization_env`` is unset: skipped, as a disabled provider is."""
        stream: StreamSettings = provider.settings
        return stream.not_delivering()

    def signed_set(
        self, provider: ProviderInfo, session: ProviderSessionInfo, context: LogoutContext
    ) -> str:
        """The ``session-revoked`` SET of one ended session for one stream."""
        stream: StreamSettings = provider.settings
        reason = stream.not_delivering()
        if reason is not None:
            raise PermanentDeliveryError(reason)
        ids = stored_identifiers(SsfIdentifiers, session.identifiers, self.protocol)
        user_is_email = "@" in session.user_id
        sub_id = subject(
            stream.subject_format,
            issuer=self.host.issuer,
            sub=ids.sub or session.user_id,
            email=ids.email or (session.user_id if user_is_email else None),
            session=ids.sid or session.session_id,
        )
        claims = session_revoked_claims(
            issuer=self.host.issuer,
            aud=stream.aud,
            sub_id=sub_id,
            now=context.now,
            txn=context.event_id,
            delivery_id=context.delivery_id,
            event_type=context.event_type,
            initiator=context.initiator,
            occurred=context.occurred_at or context.now,
        )
        return sign_set(claims, self.keys.active)

    def backchannel_request(
        self, provider: ProviderInfo, session: ProviderSessionInfo, context: LogoutContext
    ) -> BackchannelRequest:
        stream: StreamSettings = provider.settings
        return push_request(stream, self.signed_set(provider, session, context))

    def interpret_response(
        self,
        provider: ProviderInfo,
        session: ProviderSessionInfo,
        request: BackchannelRequest,
        response: BackchannelResponse,
        context: LogoutContext,
    ) -> None:
        classify_push(response, context.now)

    def verification_request(
        self, stream_id: str, stream: StreamSettings, state: str | None, now: datetime
    ) -> BackchannelRequest:
        """The SSF verification SET for ``stream`` (SSF 1.0 §8.1.4.2), ``state`` echoed."""
        claims = verification_claims(
            issuer=self.host.issuer, aud=stream.aud, stream_id=stream_id, state=state, now=now
        )
        return push_request(stream, sign_set(claims, self.keys.active))

    def jwks(self) -> dict[str, Any]:
        """The public keys SETs are verified with."""
        return self.keys.jwks()
