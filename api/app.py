"""The ASGI application: ``create_app(settings)``; ``logout-orchestrator serve`` runs it.

Routes: ``/v1/...`` (:mod:`api.routes`), ``/healthz``, ``/readyz``, ``/metrics``,
``/v1/openapi.json`` and the front-channel plan pages under ``/logout``.
"""

from __future__ import annotations

import gc
import json
import os
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.openapi import openapi_document
from api.problems import exception_handlers, problem_response
from api.query_params import QueryCheck, check_documented, query_rules
from api.routes import events, health, logouts, operations, sessions, ssf, ssf_push, users
from api.service import Service
from orchestrator.metrics import observe_request
from orchestrator.settings import Settings

__all__ = ["SETTINGS_VARIABLE", "create_app", "from_environment"]

_log = structlog.get_logger("logout.api")

#: ``serve`` with several processes names in this variable the file holding their settings
#: (JSON, readable by the user alone): the settings hold secrets, the environment must not.
SETTINGS_VARIABLE: Final = "_LOGOUT_SERVE_SETTINGS_FILE"


class _Measured:
    """Counts every answer by route template, method and status, and contains a bug: a
    ``500`` problem is sent and only the error's type is logged, never its message or
    traceback (a database error's message holds the statement's parameters, the input's
    values). ASGI middleware, outside every route."""

    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute]) -> None:
        self._app = app
        self._routes = routes

    def _template(self, scope: Scope) -> str:
        for route in self._routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return route.path if isinstance(route, Route | Mount) else "other"
        return "unmatched"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]
        started_response = [False]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                started_response[0] = True
            await send(message)

        try:
            await self._app(scope, receive, sending)
        except Exception as exc:  # noqa: BLE001 - the boundary: a problem, never a traceback
            _log.error("internal error", error_type=type(exc).__name__)
            status[0] = 500
            if not started_response[0]:
                response = problem_response(
                    500, "internal error", "a bug; the service logged its type"
                )
                await response(scope, receive, send)
        finally:
            seconds = time.perf_counter() - started
            observe_request(self._template(scope), scope["method"], status[0], seconds)


def create_app(
    settings: Settings, *, migrate: bool | None = None, frontchannel_next_url: str = "/"
) -> Starlette:
    """The service for ``settings``: reaches the database (migrating when ``migrate``, by
    default when ``auto_migrate``) and builds the broker now; closes them when the app shuts
    down."""
    service = Service.start(settings, migrate=migrate)
    document = openapi_document(
        settings.api_wait_max,
        ssf="ssf" in service.runtime.handlers,
        metrics_public=settings.metrics_public,
    )

    async def openapi(request: Request) -> Response:
        service.auth.require(request, "read")
        return JSONResponse(document)

    routes: list[BaseRoute] = [
        *events.routes(service),
        *logouts.routes(service),
        *sessions.routes(service),
        *users.routes(service),
        *operations.routes(service),
        *ssf_push.routes(service),
        *health.routes(service),
        *ssf.routes(service),
        Route("/v1/openapi.json", openapi, methods=["GET"], name="openapi"),
    ]
    try:
        from orchestrator.frontchannel.app import create_app as frontchannel_app

        pages = frontchannel_app(service.runtime, next_url=frontchannel_next_url)
        routes.append(Mount("/logout", app=pages, name="logout"))
        rules = query_rules(document)
        check_documented(routes, rules)  # a route the document lacks: a bug, found now
    except BaseException:
        service.close()
        raise

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        # What start-up made lives as long as the process: keep it out of the collector's
        # scans, so a collection during a request is shorter (as the worker does).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            service.close()

    app = Starlette(
        routes=routes,
        exception_handlers=exception_handlers(),  # type: ignore[arg-type]
        lifespan=lifespan,
    )
    # The query is checked inside _Measured (its refusals are counted), before any route.
    app.add_middleware(QueryCheck, routes=routes, rules=rules, auth=service.auth)
    app.add_middleware(_Measured, routes=routes)
    return app


def from_environment() -> Starlette:
    """The app of a ``serve`` worker process: its settings come from the parent (the file
    :data:`SETTINGS_VARIABLE` names), read once there; the parent migrated, so it does not."""
    text = Path(os.environ[SETTINGS_VARIABLE]).read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    settings = Settings.from_parent(data)
    from orchestrator.logging import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings, migrate=False)
