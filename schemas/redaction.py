"""What is never stored or logged in the clear: secret-named values, JWTs in text.

One definition, used by the event contract (``request.args`` and ``http_request.args`` are
stored redacted: an IdP's request arguments may carry an ``id_token_hint`` or a password),
by the rejected events' store (``rejected_events.payload``, ``event.rejected``) and by the
log set-up (every record, ours or a library's). ``device_id`` (a browser's device cookie id,
a bearer secret) is among the keys: an accepted ``session.started`` keeps only its hash.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["MAX_DEPTH", "REDACTED", "REDACTED_KEYS", "redact", "redact_text", "redacted_paths"]

REDACTED = "[redacted]"

#: Keys whose values are never logged or stored, at any depth (compared lower-cased).
REDACTED_KEYS = frozenset(
    {
        "logout_token",
        "token",
        "id_token_hint",
        "samlrequest",
        "samlresponse",
        "saml_request",
        "saml_response",
        "signature",
        "private_key",
        "key",
        "password",
        "secret",
        "client_secret",
        "authorization",
        "cookie",
        "device_id",
        "content",
        "body",
    }
)

#: In free text: a JWT (three base64url parts, the first a JSON object), and
#: ``key=value`` / ``"key": "value"`` pairs whose key is secret-named.
_JWT = re.compile(r"eyJ[\w-]{2,}\.[\w-]{2,}\.[\w-]*")
_SECRET_PAIR = re.compile(
    r"(?i)(\b(?:" + "|".join(sorted(REDACTED_KEYS)) + r")['\"]?\s*[=:]\s*['\"]?)"
    r"([^'\"&\s,;}]+)"
)


def redact_text(text: str) -> str:
    """``text`` with JWTs and secret-named ``key=value`` pairs masked."""
    return _SECRET_PAIR.sub(r"\1" + REDACTED, _JWT.sub(REDACTED, text))


#: Deeper than this, a container is replaced whole (no event is nested so deep).
MAX_DEPTH = 64


def redact(value: Any, _depth: int = 0) -> Any:
    """``value`` with every secret-named key's value replaced by ``[redacted]``, at any
    depth, and the secrets in its text masked (:func:`redact_text`). A null stays null: it
    hides nothing, and an event without the secret stays whole (replayable)."""
    if isinstance(value, str):
        return redact_text(value)
    if not isinstance(value, Mapping | list | tuple):
        return value
    if _depth >= MAX_DEPTH:
        return f"[nested deeper than {MAX_DEPTH} levels]"
    if isinstance(value, Mapping):
        return {
            k: REDACTED
            if str(k).lower() in REDACTED_KEYS and v is not None
            else redact(v, _depth + 1)
            for k, v in value.items()
        }
    return [redact(v, _depth + 1) for v in value]


def redacted_paths(value: Any, _path: str = "") -> list[str]:
    """Where :func:`redact` masked something in ``value``: the dotted path of each value that
    is, or holds, ``[redacted]`` (``request.args.token``, ``items.0``; ``""``: the value
    itself). Such data is not what was published and cannot stand for it."""
    if isinstance(value, str):
        return [_path] if REDACTED in value else []
    if isinstance(value, Mapping):
        items: Iterable[tuple[object, Any]] = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return []
    return [
        found
        for key, inner in items
        for found in redacted_paths(inner, f"{_path}.{key}" if _path else str(key))
    ]
