"""Bearer tokens with scopes, configured as SHA-256 hashes (``api_tokens``) and compared in
constant time: every configured hash is compared, whatever matched before."""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from starlette.requests import Request

from api.problems import ApiProblem
from orchestrator.api_tokens import ApiToken, Scope, hash_token

__all__ = ["Authenticator"]

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="logout-orchestrator"'}


class Authenticator:
    """Who holds a request's bearer token, and whether it may do what it asks."""

    def __init__(self, tokens: Sequence[ApiToken]) -> None:
        self._tokens = tuple(tokens)

    def holder(self, request: Request) -> ApiToken:
        """The configured token the request carries; 401 when none or an unknown one."""
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if not header:
            raise ApiProblem(
                401,
                "unauthorized",
                "send Authorization: Bearer <token> (a token whose SHA-256 is in api_tokens)",
                headers=_CHALLENGE,
            )
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiProblem(
                401,
                "unauthorized",
                "the Authorization header must be 'Bearer <token>'",
                headers=_CHALLENGE,
            )
        digest = hash_token(token.strip())
        found: ApiToken | None = None
        for candidate in self._tokens:  # no early exit: the time does not say which matched
            if hmac.compare_digest(digest, candidate.sha256) and found is None:
                found = candidate
        if found is None:
            raise ApiProblem(
                401, "unauthorized", "the token is not one of api_tokens", headers=_CHALLENGE
            )
        return found

    def require(self, request: Request, scope: Scope) -> ApiToken:
        """The token's holder when it has ``scope``; 401 or 403 otherwise."""
        token = self.holder(request)
        if scope not in token.scopes:
            raise ApiProblem(
                403,
                "forbidden",
                f"this token lacks the scope {scope!r}; add it to the token in api_tokens",
            )
        return token
