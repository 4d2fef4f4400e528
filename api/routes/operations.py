"""What an operator reads (scope ``read``), as the CLI lists it: ``GET /v1/deliveries``
(``status``, ``provider``, ``since``, ``event``, ``limit``), ``GET /v1/rejected-events``
(``since``, ``limit``) and ``GET /v1/providers``. Acting on them (retry, replay, disable,
remove) is the CLI's (``docs``: *Deliveries, rejected events and providers*)."""

from __future__ import annotations

from datetime import datetime

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.models import DeliveriesAnswer, ProvidersAnswer, RejectedAnswer
from api.service import Service
from orchestrator.audit_query import parse_timestamp, resolve_event_id
from orchestrator.operations import (
    DeliveryQuery,
    list_deliveries,
    list_providers,
    list_rejected,
)
from orchestrator.operations.page import TABLE_LIMIT
from orchestrator.store import DeliveryStatus
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


def _status(request: Request) -> DeliveryStatus | None:
    text = request.query_params.get("status")
    if text is None:
        return None
    try:
        return DeliveryStatus(text)
    except ValueError:
        known = ", ".join(s.value for s in DeliveryStatus)
        raise InputError([Problem("query", "status", f"one of {known}; got {text!r}")]) from None


def routes(service: Service) -> list[Route]:
    engine = service.runtime.engine

    def deliveries_of(request: Request) -> DeliveriesAnswer:
        event = request.query_params.get("event")
        event_id = None
        if event is not None:
            with engine.connect() as conn:
                try:
                    event_id = resolve_event_id(conn, event)
                except InputError as exc:
                    message = exc.problems[0].message
                    raise InputError([Problem("query", "event", message)]) from None
        query = DeliveryQuery(
            _status(request), request.query_params.get("provider"), event_id, _since(request)
        )
        page = list_deliveries(engine, query, _limit(request))
        items = [view.as_json() for view in page.items]
        return DeliveriesAnswer.model_validate({"deliveries": items, "total": page.total})

    async def get_deliveries(request: Request) -> Response:
        service.auth.require(request, "read")
        answer = await service.run(lambda: deliveries_of(request))
        return JSONResponse(answer.model_dump(mode="json"))

    async def get_rejected(request: Request) -> Response:
        service.auth.require(request, "read")
        since, limit = _since(request), _limit(request)
        page = await service.run(lambda: list_rejected(engine, since, limit))
        items = [view.as_json() for view in page.items]
        answer = RejectedAnswer.model_validate({"rejected_events": items, "total": page.total})
        return JSONResponse(answer.model_dump(mode="json"))

    async def get_providers(request: Request) -> Response:
        service.auth.require(request, "read")
        views = await service.run(lambda: list_providers(engine, service.runtime.handlers))
        answer = ProvidersAnswer.model_validate({"providers": [v.as_json() for v in views]})
        return JSONResponse(answer.model_dump(mode="json"))

    return [
        Route("/v1/deliveries", get_deliveries, methods=["GET"], name="deliveries"),
        Route("/v1/rejected-events", get_rejected, methods=["GET"], name="rejected_events"),
        Route("/v1/providers", get_providers, methods=["GET"], name="providers"),
    ]
