"""What an operator reads (scope ``read``), as the CLI lists it: ``GET /v1/deliveries``
(``status``, ``provider``, ``since``, ``event``, ``limit``), ``GET /v1/rejected-events``
(``since``, ``limit``) and ``GET /v1/providers``. Acting on them (retry, replay, disable,
remove) is the CLI's (``docs``: *Deliveries, rejected events and providers*)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.models import DeliveriesAnswer, ProvidersAnswer, RejectedAnswer
from api.service import Service
from orchestrator.audit_query import parse_timestamp
from orchestrator.operations import (
    delivery_query,
    list_deliveries,
    list_providers,
    list_rejected,
)
from orchestrator.operations.page import TABLE_LIMIT
from schemas.errors import InputError, Problem

__all__ = ["routes"]


def _since(request: Request) -> datetime | None:
    text = request.query_params.get("since")
    try:
        return parse_timestamp(text) if text is not None else None
    except InputError as exc:
        raise InputError([Problem("query", "since", exc.problems[0].message)]) from None


def _limit(request: Request) -> int:
    text = request.query_params.get("limit", str(TABLE_LIMIT))
    if not text.isdigit() or not 1 <= int(text) <= TABLE_LIMIT:
        raise InputError(
            [Problem("query", "limit", f"a whole number from 1 to {TABLE_LIMIT}; got {text!r}")]
        )
    return int(text)


def routes(service: Service) -> list[Route]:
    engine = service.runtime.engine

    def deliveries_of(request: Request) -> DeliveriesAnswer:
        params = request.query_params
        try:
            query = delivery_query(
                engine,
                status=params.get("status"),
                provider=params.get("provider"),
                event=params.get("event"),
                since=_since(request),
            )
        except InputError as exc:
            raise InputError([replace(p, where="query") for p in exc.problems]) from None
        page = list_deliveries(engine, query, _limit(request))
        return DeliveriesAnswer(deliveries=list(page.items), total=page.total)

    async def get_deliveries(request: Request) -> Response:
        service.auth.require(request, "read")
        answer = await service.run(lambda: deliveries_of(request))
        return JSONResponse(answer.model_dump(mode="json"))

    async def get_rejected(request: Request) -> Response:
        service.auth.require(request, "read")
        since, limit = _since(request), _limit(request)
        page = await service.run(lambda: list_rejected(engine, since, limit))
        answer = RejectedAnswer(rejected_events=list(page.items), total=page.total)
        return JSONResponse(answer.model_dump(mode="json"))

    async def get_providers(request: Request) -> Response:
        service.auth.require(request, "read")
        views = await service.run(lambda: list_providers(engine, service.runtime.handlers))
        answer = ProvidersAnswer(providers=views)
        return JSONResponse(answer.model_dump(mode="json"))

    return [
        Route("/v1/deliveries", get_deliveries, methods=["GET"], name="deliveries"),
        Route("/v1/rejected-events", get_rejected, methods=["GET"], name="rejected_events"),
        Route("/v1/providers", get_providers, methods=["GET"], name="providers"),
    ]
