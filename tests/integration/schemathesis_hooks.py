"""Schemathesis hooks of ``test_api_fuzz`` (loaded through ``SCHEMATHESIS_HOOKS``): how to
send bodies of the media types it has no serializer for."""

from __future__ import annotations

import json

import schemathesis


@schemathesis.serializer("application/secevent+jwt")
def secevent_jwt(_context: schemathesis.SerializationContext, value: object) -> bytes:
    """A pushed SET is a compact JWS: the generated string as its text."""
    return value.encode() if isinstance(value, str) else json.dumps(value).encode()
