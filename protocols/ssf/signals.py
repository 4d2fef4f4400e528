"""What each event of a verified SET asks of us, from its type and its subject.

Subjects are RFC 9493 subject identifiers, taken from the SET's ``sub_id`` claim (SSF 1.0)
or, for transmitters of the earlier drafts, from the event's own ``subject``:

- ``opaque`` ``{"id"}``: a session id we issued for ``session-revoked`` (the event is about
  a session, as in CAEP 1.0's examples, and our transmitter sends it so), a user id for the
  user-level events;
- ``complex`` with ``session`` (itself a subject: ``opaque``) and/or ``user``: the session
  when there is one, else the user. A ``user`` beside the session must map (below), else the
  event is ignored: the session is ended only when it is that user's, which the engine
  checks as it ends it (``session.revoke`` with ``user_id``);
- ``iss_sub`` ``{"iss", "sub"}``: the user ``sub``, when ``iss`` is one of ``issuers``;
- ``email``: the user whose id is the address, only when the transmitter is configured so
  (``email_is_user_id``); otherwise the event is recorded and ignored.

An ``event_timestamp`` must be a number of seconds since 1970, not later than now (plus
the clock skew ``iat`` is allowed); it becomes the event's ``occurred_at`` (without one,
``iat`` does). Anything else refuses the SET (``invalid_request``).

``session-revoked`` ends the session (or, with a user subject, every session of the user);
``credential-change`` with ``change_type`` ``revoke`` or ``delete``, RISC
``account-disabled`` and ``sessions-revoked`` end every session of the user. Anything else
is recorded and ignored, with the reason.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from protocols.ssf.receiving import CLOCK_SKEW, SetRefusedError
from protocols.ssf.settings import CAEP_EVENT_TYPE, SESSION_REVOKED

__all__ = [
    "ACCOUNT_DISABLED",
    "CREDENTIAL_CHANGE",
    "SESSIONS_REVOKED",
    "SESSION_REVOKED",
    "Signal",
    "read_signals",
]

_RISC: Final = "https://schemas.openid.net/secevent/risc/event-type/"
CREDENTIAL_CHANGE: Final = CAEP_EVENT_TYPE + "credential-change"
ACCOUNT_DISABLED: Final = _RISC + "account-disabled"
SESSIONS_REVOKED: Final = _RISC + "sessions-revoked"
#: Events that end every session of the user (credential-change only when revoked/deleted).
_USER_EVENTS: Final = frozenset({CREDENTIAL_CHANGE, ACCOUNT_DISABLED, SESSIONS_REVOKED})
_ENDING: Final = frozenset({"revoke", "delete"})
#: The longest identifier our sessions and users have (schemas.fields.Identifier).
_ID_MAX: Final = 255


@dataclass(frozen=True, slots=True)
class Signal:
    """One event of a SET and what it asks: end a ``session`` or every session of a
    ``user`` (``target`` is its id), or nothing (``ignore``, with ``why``)."""

    event_type: str
    action: Literal["session", "user", "ignore"]
    target: str | None = None
    why: str | None = None
    #: ``event_timestamp`` of the event (seconds since 1970), when it has one.
    timestamp: float | None = None
    #: For a session: the user a complex subject names beside it, whom the session must
    #: belong to (the engine checks as it ends it; a session of someone else stays open).
    user: str | None = None


@dataclass(frozen=True, slots=True)
class _Subject:
    session: str | None = None
    user: str | None = None
    unmapped: str | None = None


def read_signals(
    claims: Mapping[str, Any], *, issuers: Collection[str], email_is_user_id: bool, now: float
) -> list[Signal]:
    """One :class:`Signal` per event of verified ``claims``, in the SET's order; ``now`` is
    the receiving time (seconds since 1970) no ``event_timestamp`` may lie after."""
    signals = []
    for event_type, payload in claims["events"].items():
        subject_data = claims.get("sub_id", payload.get("subject"))
        timestamp = _timestamp(payload.get("event_timestamp"), now)
        signals.append(
            _signal(str(event_type), payload, subject_data, issuers, email_is_user_id, timestamp)
        )
    return signals


def _timestamp(stamp: object, now: float) -> float | None:
    """An event's ``event_timestamp``, None when it has none; refused when it is no time
    this event can have happened at (a bool, not finite, not positive, in the future)."""
    if stamp is None:
        return None
    # The comparison also refuses NaN and infinity, and huge integers without converting.
    if (
        isinstance(stamp, bool)
        or not isinstance(stamp, int | float)
        or not 0 < stamp <= (now + CLOCK_SKEW)
    ):
        raise SetRefusedError(
            "invalid_request",
            "event_timestamp must be the seconds since 1970 the event happened at, a "
            f"positive number not later than now (+{CLOCK_SKEW} s of clock skew)",
        )
    return float(stamp)


def _signal(
    event_type: str,
    payload: Mapping[str, Any],
    subject_data: object,
    issuers: Collection[str],
    email_is_user_id: bool,
    timestamp: float | None,
) -> Signal:
    change = payload.get("change_type")
    if event_type == CREDENTIAL_CHANGE and not (isinstance(change, str) and change in _ENDING):
        return Signal(event_type, "ignore", why="credential-change that is no revoke or delete")
    if event_type != SESSION_REVOKED and event_type not in _USER_EVENTS:
        return Signal(event_type, "ignore", why="an event type this receiver does not act on")
    subject = _subject(subject_data, issuers, email_is_user_id)
    if subject.unmapped is not None:
        return Signal(event_type, "ignore", why=subject.unmapped, timestamp=timestamp)
    if event_type == SESSION_REVOKED and subject.session is not None:
        return Signal(
            event_type, "session", subject.session, timestamp=timestamp, user=subject.user
        )
    if event_type == SESSION_REVOKED and _format(subject_data) == "opaque":
        # An opaque session-revoked subject is the session (its ``id``: a session we issued).
        return Signal(event_type, "session", subject.user, timestamp=timestamp)
    if subject.user is not None:
        return Signal(event_type, "user", subject.user, timestamp=timestamp)
    return Signal(event_type, "ignore", why="the subject names no user", timestamp=timestamp)


def _subject(data: object, issuers: Collection[str], email_is_user_id: bool) -> _Subject:
    """The session and/or user ``data`` names; a subject we cannot map is ``unmapped``."""
    if not isinstance(data, dict):
        raise SetRefusedError(
            "invalid_request", "the SET names no subject: send sub_id (RFC 9493, SSF 1.0)"
        )
    if data.get("format") != "complex":
        return _simple(data, issuers, email_is_user_id)
    session, user = data.get("session"), data.get("user")
    if not isinstance(session, dict) and not isinstance(user, dict):
        raise SetRefusedError(
            "invalid_request", "a complex subject needs a user or a session member"
        )
    found = _simple(user, issuers, email_is_user_id) if isinstance(user, dict) else _Subject()
    if not isinstance(session, dict) or found.unmapped is not None:
        # A session beside a user we cannot map is ignored: whose it must be is unknown.
        return found
    if session.get("format") != "opaque":
        raise SetRefusedError(
            "invalid_request",
            "a complex subject's session must be an opaque subject (the session id we issued)",
        )
    return _Subject(session=_identifier(session, "id"), user=found.user)


def _simple(data: dict[str, Any], issuers: Collection[str], email_is_user_id: bool) -> _Subject:
    """A subject of one of the simple formats (a complex one nested in another: unmapped)."""
    fmt = data.get("format")
    if fmt == "opaque":
        return _Subject(user=_identifier(data, "id"))
    if fmt == "iss_sub":
        sub = _identifier(data, "sub")
        iss = data.get("iss")
        if not isinstance(iss, str) or iss not in issuers:
            return _Subject(unmapped="an iss_sub subject of another issuer")
        return _Subject(user=sub)
    if fmt == "email":
        email = _identifier(data, "email")
        if not email_is_user_id:
            return _Subject(unmapped="an email subject, and email_is_user_id is off")
        return _Subject(user=email)
    return _Subject(unmapped=f"the subject format {str(fmt)[:40]!r} is not mapped")


def _format(data: object) -> object:
    return data.get("format") if isinstance(data, dict) else None


def _identifier(data: Mapping[str, Any], member: str) -> str:
    value = data.get(member)
    if not isinstance(value, str) or not value.strip() or len(value) > _ID_MAX:
        raise SetRefusedError(
            "invalid_request",
            f"the {data.get('format')} subject's {member!r} must be a string of 1-{_ID_MAX} "
            "characters",
        )
    return value
