"""Query parameters, checked once for every route against the OpenAPI document: unknown
ones and repeated single ones refused, naming them (and the one meant)."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from api.auth import Authenticator
from api.openapi import openapi_document
from api.query_params import QueryCheck, check_documented, query_problems, query_rules
from orchestrator.api_tokens import ApiToken, hash_token

TOKEN = "a-token-for-the-query-tests-0123456789"


def test_unknown_parameters_are_named_with_the_one_meant() -> None:
    (problem,) = query_problems([("statsu", "failed")], {"status": False, "limit": False})
    assert (problem.where, problem.field) == ("query", "statsu")
    assert "did you mean status?" in problem.message
    assert "it takes limit, status" in problem.message


def test_an_endpoint_without_parameters_says_so() -> None:
    (problem,) = query_problems([("x", "")], {})
    assert problem.message == "not a parameter of this endpoint; it takes no query parameter"
    (empty,) = query_problems([("", "1")], {"wait": False})
    assert empty.message.startswith("an empty name")


def test_a_single_parameter_given_twice_is_refused_a_list_is_not() -> None:
    (problem,) = query_problems([("limit", "1"), ("limit", "2")], {"limit": False})
    assert (problem.field, problem.message) == ("limit", "given 2 times; give it once")
    assert query_problems([("tag", "a"), ("tag", "b")], {"tag": True}) == []
    assert query_problems([("limit", "1")], {"limit": False}) == []


def test_the_rules_come_from_the_document() -> None:
    rules = query_rules(openapi_document(ssf=True))
    deliveries = rules["/v1/deliveries", "GET"]
    assert set(deliveries.names) == {"status", "provider", "event", "since", "limit"}
    assert deliveries.scope == "read"
    assert set(rules["/v1/logouts/{event_id}", "GET"].names) == {"wait"}
    assert rules["/healthz", "GET"].names == {}
    assert rules["/healthz", "GET"].scope is None
    assert rules["/v1/ssf/push/{stream}", "POST"].scope is None  # its token is optional
    assert rules["/metrics", "GET"].scope == "read"
    public = query_rules(openapi_document(metrics_public=True))
    assert public["/metrics", "GET"].scope is None


def test_a_route_the_document_lacks_is_a_bug_found_at_once() -> None:
    async def nothing(_request: Request) -> Response:
        return Response()

    with pytest.raises(ValueError, match="GET /v1/undocumented"):
        check_documented([Route("/v1/undocumented", nothing)], query_rules(openapi_document()))


def _client() -> TestClient:
    async def listing(request: Request) -> Response:
        return JSONResponse({"status": request.query_params.get("status")})

    routes = [Route("/v1/deliveries", listing, methods=["GET"])]
    app = Starlette(routes=routes)
    auth = Authenticator([ApiToken(name="r", sha256=hash_token(TOKEN), scopes=["read"])])
    rules = query_rules(openapi_document())
    app.add_middleware(QueryCheck, routes=routes, rules=rules, auth=auth)
    return TestClient(app)


def test_the_check_answers_a_problem_after_authentication() -> None:
    with _client() as client:
        good = client.get(
            "/v1/deliveries?status=failed", headers={"authorization": f"Bearer {TOKEN}"}
        )
        refused = client.get(
            "/v1/deliveries?statsu=failed", headers={"authorization": f"Bearer {TOKEN}"}
        )
        anonymous = client.get("/v1/deliveries?statsu=failed")
        unrouted = client.get("/v1/nowhere?x=1")
    assert good.json() == {"status": "failed"}
    assert refused.status_code == 422
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["errors"][0]["field"] == "statsu"
    assert anonymous.status_code == 401  # as the endpoint would answer: nothing told
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    assert unrouted.status_code == 404
