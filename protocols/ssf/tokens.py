"""Security Event Tokens (RFC 8417) of this transmitter: CAEP ``session-revoked`` and the
SSF verification event, addressed with RFC 9493 subject identifiers and signed with the
logout-token keys."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

import jwt

from protocols.oidc.keys import SigningKey
from protocols.ssf.settings import SESSION_REVOKED, VERIFICATION, SubjectFormat
from schemas.errors import PermanentDeliveryError

__all__ = [
    "SET_TYPE",
    "delivery_jti",
    "initiating_entity",
    "reason_admin",
    "session_revoked_claims",
    "sign_set",
    "subject",
    "verification_claims",
]

#: RFC 8417 §2.3: the ``typ`` of a SET's JWS header.
SET_TYPE: Final = "secevent+jwt"
#: The namespace of a delivery's ``jti`` (uuid5 of the delivery id).
_JTI_NAMESPACE: Final = uuid.UUID("6f0b8f8e-4c1a-5d0e-9a57-3c1f2b7d9e41")

#: Why a session ended, for the receiver's administrators (CAEP ``reason_admin``), by event
#: type of the engine.
_REASONS: Final[Mapping[str, str]] = {
    "logout.user": "The user logged out",
    "logout.provider": "The user logged out at a relying party",
    "session.revoke": "An administrator revoked the session",
    "user.revoke_all": "All of the user's sessions were revoked",
    "session.terminate_others": "The user's other sessions were ended at a new login",
    "session.expired": "The session expired",
    "session.binding_violation": "The session was used from a network it is not bound to",
}
#: Endings decided by a rule rather than a person: CAEP ``initiating_entity`` ``policy``.
_BY_POLICY: Final = frozenset({"session.expired", "session.binding_violation"})


def initiating_entity(event_type: str, initiator: str) -> str:
    """CAEP ``initiating_entity``: ``policy`` for an expiry or a binding violation, else the
    event's ``initiator`` (``user``, ``admin``, ``policy`` or ``system``: the same words)."""
    if event_type in _BY_POLICY:
        return "policy"
    return initiator if initiator in ("user", "admin", "policy", "system") else "system"


def reason_admin(event_type: str) -> dict[str, str]:
    """CAEP ``reason_admin``: a language-tagged text saying why."""
    return {"en": _REASONS.get(event_type, "The session ended")}


def subject(
    subject_format: SubjectFormat,
    *,
    issuer: str,
    sub: str,
    email: str | None,
    session: str,
) -> dict[str, Any]:
    """The RFC 9493 subject identifier of ``subject_format`` for a ``session-revoked``:
    ``complex`` names the user (``iss_sub``) and the session (``opaque``), as the CAEP
    Interoperability Profile does; ``opaque`` alone is the session (the event is about a
    session, as in CAEP 1.0's examples; our receiver reads it so), never the user, whom a
    receiver would then log out everywhere."""
    match subject_format:
        case SubjectFormat.ISS_SUB:
            return {"format": "iss_sub", "iss": issuer, "sub": sub}
        case SubjectFormat.EMAIL:
            if email is None:
                raise PermanentDeliveryError(
                    "the stream wants email subjects and this session has no email: record "
                    "the provider session with identifiers.email, or use another subject_format"
                )
            return {"format": "email", "email": email}
        case SubjectFormat.OPAQUE:
            return {"format": "opaque", "id": session}
        case SubjectFormat.COMPLEX:
            return {
                "format": "complex",
                "user": {"format": "iss_sub", "iss": issuer, "sub": sub},
                "session": {"format": "opaque", "id": session},
            }


def delivery_jti(delivery_id: str) -> str:
    """The ``jti`` of every attempt of one delivery (one ended session for one stream): a
    retry after a lost answer is the same SET to the receiver (RFC 8417 §2.2), which it can
    drop as a duplicate. Only ``iat`` differs between attempts: the attempt's time."""
    return uuid.uuid5(_JTI_NAMESPACE, delivery_id).hex


def _envelope(
    issuer: str, aud: str, now: datetime, txn: str | None, jti: str | None = None
) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": aud,
        "iat": int(now.timestamp()),
        "jti": jti or uuid.uuid4().hex,
    }
    if txn is not None:
        claims["txn"] = txn
    return claims


def session_revoked_claims(
    *,
    issuer: str,
    aud: str,
    sub_id: dict[str, Any],
    now: datetime,
    txn: str,
    delivery_id: str,
    event_type: str,
    initiator: str,
    occurred: datetime,
) -> dict[str, Any]:
    """A CAEP ``session-revoked`` SET: ``jti`` the same for every attempt of the delivery
    (:func:`delivery_jti`), ``iat`` the attempt's time, ``txn`` the same for every SET of
    one logout (its event id), ``sub_id`` at the top (SSF 1.0 §4.1)."""
    return {
        **_envelope(issuer, aud, now, txn, delivery_jti(delivery_id)),
        "sub_id": sub_id,
        "events": {
            SESSION_REVOKED: {
                "event_timestamp": int(occurred.timestamp()),
                "initiating_entity": initiating_entity(event_type, initiator),
                "reason_admin": reason_admin(event_type),
            }
        },
    }


def verification_claims(
    *, issuer: str, aud: str, stream_id: str, state: str | None, now: datetime
) -> dict[str, Any]:
    """An SSF verification SET (§8.1.4.1): its subject is the stream, ``state`` echoed; a
    fresh ``jti`` for each request (each is a new verification)."""
    event: dict[str, Any] = {} if state is None else {"state": state}
    return {
        **_envelope(issuer, aud, now, None),
        "sub_id": {"format": "opaque", "id": stream_id},
        "events": {VERIFICATION: event},
    }


def sign_set(claims: dict[str, Any], key: SigningKey) -> str:
    """Sign with the key's algorithm; the header carries ``typ: secevent+jwt`` and ``kid``."""
    return jwt.encode(
        claims, key.private_key, algorithm=key.alg, headers={"typ": SET_TYPE, "kid": key.kid}
    )
