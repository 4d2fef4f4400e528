"""Front-channel logout URLs (OpenID Connect Front-Channel Logout 1.0 §2 and §3)."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["frontchannel_url"]


def frontchannel_url(uri: str, *, issuer: str, sid: str | None, session_required: bool) -> str:
    """``uri`` with ``iss`` and ``sid`` added (both or neither), keeping its own query.

    Both are sent whenever the session's ``sid`` is known; a client that requires them
    and a session without ``sid`` cannot be logged out this way (``ValueError``).
    """
    if sid is None:
        if session_required:
            raise ValueError("the client requires iss and sid, and the session has no sid")
        return uri
    parts = urlsplit(uri)
    query = [
        (k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in ("iss", "sid")
    ]
    query += [("iss", issuer), ("sid", sid)]
    return urlunsplit(parts._replace(query=urlencode(query)))
