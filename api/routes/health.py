"""``/healthz`` (the process lives), ``/readyz`` (database, schema and broker answer) and
``/metrics`` (Prometheus; a token with scope ``read`` unless ``metrics_public``)."""

from __future__ import annotations

from typing import Final

import structlog
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.problems import PROBLEM_TYPE, RETRY_AFTER
from api.service import Service
from orchestrator.metrics import CONTENT_TYPE, scrape
from orchestrator.store.engine import check_connection
from orchestrator.store.migrate import check_schema
from schemas.errors import LogoutError

__all__ = ["DOWN", "routes"]

_log = structlog.get_logger("logout.api")


#: What ``/readyz`` says of a part that is down: fixed sentences, since it answers without a
#: token (never the database URL, its user or host, nor a driver's message).
DOWN: Final = {
    "database": "unreachable",
    "schema": "missing or behind: run logout-orchestrator db upgrade",
    "broker": "unreachable",
}


def _down(part: str, exc: Exception) -> str:
    _log.warning("not ready", part=part, error_type=type(exc).__name__)
    return DOWN[part]


def _readiness(service: Service) -> dict[str, str]:
    from workers.broker import check_broker

    checks: dict[str, str] = {}
    engine = service.runtime.engine
    try:
        check_connection(engine)
        checks["database"] = "ok"
    except LogoutError as exc:
        checks["database"] = _down("database", exc)
    else:
        try:
            check_schema(engine)
            checks["schema"] = "ok"
        except (LogoutError, SQLAlchemyError) as exc:
            checks["schema"] = _down("schema", exc)
    try:
        check_broker(service.broker, service.settings)
        checks["broker"] = "ok"
    except LogoutError as exc:
        checks["broker"] = _down("broker", exc)
    return checks


def routes(service: Service) -> list[Route]:
    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok", "checks": {}})

    async def readyz(_request: Request) -> Response:
        checks = await service.run(lambda: _readiness(service))
        down = sorted(name for name, state in checks.items() if state != "ok")
        if not down:
            return JSONResponse({"status": "ready", "checks": checks})
        body = {
            "type": "about:blank",
            "title": "not ready",
            "status": 503,
            "detail": f"{', '.join(down)} not ready: see checks; the operator finds the "
            "reason in the service's log",
            "checks": checks,
        }
        return JSONResponse(
            body, 503, media_type=PROBLEM_TYPE, headers={"Retry-After": RETRY_AFTER}
        )

    async def metrics(request: Request) -> Response:
        if not service.settings.metrics_public:
            service.auth.require(request, "read")
        body = await service.run(lambda: scrape(service.runtime.database))
        return Response(body, media_type=CONTENT_TYPE)

    return [
        Route("/healthz", healthz, methods=["GET"], name="healthz"),
        Route("/readyz", readyz, methods=["GET"], name="readyz"),
        Route("/metrics", metrics, methods=["GET"], name="metrics"),
    ]
