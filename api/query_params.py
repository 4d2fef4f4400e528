"""Query parameters, checked once for every route against the OpenAPI document: a parameter
the endpoint does not take, or a single-valued one given twice, is a 422 problem naming it
(and, for a near miss, the one meant), never silently ignored.

The document is the one list of each operation's parameters, so what the service accepts and
what it documents cannot drift apart. The check follows authentication: a request without the
operation's scope is answered 401 or 403, as the endpoint itself would answer it. The
front-channel pages (mounted under ``/logout``, for the browser, with the providers' own
parameters) are not checked here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from api.auth import Authenticator
from api.problems import ApiProblem, input_refused, problem_response
from orchestrator.api_tokens import Scope as TokenScope
from schemas.errors import Problem
from schemas.hints import did_you_mean

__all__ = ["QueryCheck", "QueryRule", "check_documented", "query_problems", "query_rules"]

_METHODS: Final = ("get", "put", "post", "delete", "patch")
#: The longest parameter name a refusal repeats whole (and suggests a near name for).
_NAME_MAX: Final = 100


@dataclass(frozen=True)
class QueryRule:
    """An operation's query parameters (name: whether it may be repeated) and the token
    scope it needs (None: public)."""

    names: Mapping[str, bool]
    scope: TokenScope | None


def _scope(operation: Mapping[str, Any]) -> TokenScope | None:
    """The scope of ``operation``'s security requirement; None when a token is optional."""
    requirements = operation.get("security", [])
    if any(not requirement for requirement in requirements):
        return None
    for requirement in requirements:
        for scopes in requirement.values():
            if scopes:
                found: TokenScope = scopes[0]
                return found
    return None


def _names(operation: Mapping[str, Any]) -> dict[str, bool]:
    return {
        parameter["name"]: parameter.get("schema", {}).get("type") == "array"
        for parameter in operation.get("parameters", [])
        if parameter["in"] == "query"
    }


def query_rules(document: Mapping[str, Any]) -> dict[tuple[str, str], QueryRule]:
    """Each operation of the OpenAPI ``document`` by ``(path template, METHOD)``."""
    rules: dict[tuple[str, str], QueryRule] = {}
    for path, item in document["paths"].items():
        for method in _METHODS:
            if method in item:
                operation = item[method]
                rules[path, method.upper()] = QueryRule(_names(operation), _scope(operation))
    return rules


def query_problems(pairs: Sequence[tuple[str, str]], names: Mapping[str, bool]) -> list[Problem]:
    """What is wrong with the query ``pairs`` (as parsed, in order) for an operation taking
    ``names`` (name: may repeat): each unknown parameter and each repeated single one."""
    counts = Counter(name for name, _ in pairs)
    taken = ", ".join(sorted(names)) if names else ""
    problems = []
    for name, count in counts.items():
        if name not in names:
            # A name no endpoint takes is at most a few dozen characters: a longer one gets
            # no suggestion and is echoed cut (what a request line of 64 KiB would cost).
            long = len(name) > _NAME_MAX
            hint = did_you_mean(name, names) if name and not long else ""
            field = f"{name[:_NAME_MAX]}… ({len(name)} characters)" if long else name
            where = f"; it takes {taken}" if taken else "; it takes no query parameter"
            shown = "an empty name" if not name else "not a parameter of this endpoint"
            problems.append(Problem("query", field, f"{shown}{hint}{where}"))
        elif count > 1 and not names[name]:
            problems.append(Problem("query", name, f"given {count} times; give it once"))
    return problems


def check_documented(
    routes: Sequence[BaseRoute], rules: Mapping[tuple[str, str], QueryRule]
) -> None:
    """Raise ValueError naming each route (but mounts) the OpenAPI document lacks: its
    query could not be checked (a bug, found when the app is made)."""
    missing = [
        f"{method} {route.path}"
        for route in routes
        if isinstance(route, Route)
        for method in sorted(route.methods or ())
        if method != "HEAD" and (route.path, method) not in rules
    ]
    if missing:
        raise ValueError(f"routes missing from the OpenAPI document: {', '.join(missing)}")


class QueryCheck:
    """ASGI middleware refusing a request whose query the matched operation does not take
    (:func:`query_problems`); every route of ``routes`` is in ``rules``
    (:func:`check_documented`)."""

    def __init__(
        self,
        app: ASGIApp,
        routes: Sequence[BaseRoute],
        rules: Mapping[tuple[str, str], QueryRule],
        auth: Authenticator,
    ) -> None:
        self._app = app
        self._routes = [route for route in routes if isinstance(route, Route)]
        self._rules = rules
        self._auth = auth

    def _rule(self, scope: Scope) -> QueryRule | None:
        """The rule of the operation ``scope`` asks for; None when no route takes it whole
        (the router answers 404 or 405) or it is under a mount."""
        method = "GET" if scope["method"] == "HEAD" else scope["method"]
        for route in self._routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return self._rules.get((route.path, method))
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        rule = self._rule(scope) if scope["type"] == "http" and scope["query_string"] else None
        if rule is None:
            await self._app(scope, receive, send)
            return
        query = scope["query_string"].decode("latin-1")
        problems = query_problems(parse_qsl(query, keep_blank_values=True), rule.names)
        if not problems:
            await self._app(scope, receive, send)
            return
        try:
            if rule.scope is not None:
                self._auth.require(Request(scope), rule.scope)
        except ApiProblem as exc:
            response = problem_response(exc.status, exc.title, exc.detail, headers=exc.headers)
        else:
            response = input_refused(problems)
        await response(scope, receive, send)
