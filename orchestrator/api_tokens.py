"""The HTTP service's bearer tokens as the settings hold them: a name, the token's SHA-256
(never the token itself) and its scopes.

A token is a long random string (``logout-orchestrator api token`` makes one); only its hash
is configured, so a leaked settings file or ``config show`` reveals no credential. Tokens are
high-entropy, so a plain SHA-256 is enough (no salt or slow hash is needed, as for passwords).
"""

from __future__ import annotations

import hashlib
import secrets

from pydantic import BaseModel, ConfigDict, Field

from schemas.fields import Sha256Hex
from schemas.scopes import SCOPES, Scope

__all__ = ["SCOPES", "ApiToken", "Scope", "hash_token", "new_token"]


class ApiToken(BaseModel):
    """One configured token: ``{"name": "idp", "sha256": "<64 hex>", "scopes": ["read"]}``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=64, description="who holds it, for the logs")
    sha256: Sha256Hex = Field(description="hex SHA-256 of the token (hash_token)")
    scopes: list[Scope] = Field(min_length=1)


def hash_token(token: str) -> str:
    """The hex SHA-256 of a high-entropy bearer secret: what is stored and compared instead
    of it (an API token as ``api_tokens`` holds it)."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A new random token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)
