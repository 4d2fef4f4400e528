"""Push-based SET delivery (RFC 8935 §2): the request, and what the receiver's answer means."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Final

from protocols.base import BackchannelRequest, BackchannelResponse, parse_retry_after
from protocols.ssf.settings import StreamSettings
from schemas.errors import PermanentDeliveryError, TransientDeliveryError

__all__ = ["PUSH_DELIVERY", "RETRIABLE_ERRORS", "SET_MEDIA_TYPE", "classify_push", "push_request"]

#: SSF 1.0 §6.1.1: the delivery method URN of RFC 8935 push.
PUSH_DELIVERY: Final = "urn:ietf:rfc:8935"
SET_MEDIA_TYPE: Final = "application/secevent+jwt"
#: The ``err`` of a 400 worth sending again: ``invalid_key`` (RFC 8935 §2.4: a key the
#: receiver does not accept, such as one it has not fetched yet after a rotation). Every
#: other code says the SET itself is wrong for the receiver: sending it again changes nothing.
RETRIABLE_ERRORS: Final = frozenset({"invalid_key"})
#: Statuses of a receiver that may answer later (RFC 8935 §2.3: "appropriate HTTP status").
_TRANSIENT: Final = frozenset({408, 425, 429, 500, 502, 503, 504})


def push_request(stream: StreamSettings, token: str) -> BackchannelRequest:
    """POST the SET as ``application/secevent+jwt``, asking for JSON errors, with the
    stream's Authorization header when it has one."""
    headers = {"content-type": SET_MEDIA_TYPE, "accept": "application/json"}
    authorization = stream.authorization_header()
    if authorization is not None:
        headers["authorization"] = authorization
    return BackchannelRequest(url=stream.endpoint_url, content=token.encode(), headers=headers)


def _error_code(content: bytes) -> tuple[str | None, str | None]:
    """``err`` and ``description`` of a 400's JSON body, or None each when unreadable."""
    try:
        body = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return None, None
    if not isinstance(body, dict):
        return None, None
    err, description = body.get("err"), body.get("description")
    return (
        err if isinstance(err, str) else None,
        description[:200] if isinstance(description, str) else None,
    )


def classify_push(response: BackchannelResponse, now: datetime) -> None:
    """Return on ``202 Accepted`` (and a ``200``/``204`` some receivers send); raise otherwise.

    ``400`` is permanent unless its ``err`` is in :data:`RETRIABLE_ERRORS`; 5xx, 408, 425
    and 429 are transient (``Retry-After`` honoured); anything else is permanent.
    """
    status = response.status_code
    if status in (200, 202, 204):
        return
    if status == 400:
        err, description = _error_code(response.content)
        said = f"HTTP 400 err={err or 'none'}" + (f": {description}" if description else "")
        if err in RETRIABLE_ERRORS:
            raise TransientDeliveryError(said, status_code=status)
        raise PermanentDeliveryError(said, status_code=status)
    if status in _TRANSIENT or 500 <= status < 600:
        retry_after = parse_retry_after(response.headers.get("retry-after"), now)
        raise TransientDeliveryError(f"HTTP {status}", status_code=status, retry_after=retry_after)
    raise PermanentDeliveryError(f"HTTP {status}", status_code=status)
