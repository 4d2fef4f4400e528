"""``GET /v1/logouts/{event_id}?wait=`` and ``GET /v1/plans/{plan_id}?wait=``: long polls on
:class:`~orchestrator.waiting.LogoutWaiter` (a notification wakes them, never a sleep loop);
``GET /v1/logouts/{event_id}/timeline``: the logout as an HTML page for operators."""

from __future__ import annotations

import math
import uuid

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from api.models import DeliveryItem, LogoutAnswer
from api.pages import render_timeline
from api.problems import ApiProblem
from api.service import Service
from orchestrator.event_status import delivery_states, event_states
from orchestrator.logout.rollup import Tally
from orchestrator.timeline import Timeline, read_timeline
from schemas.errors import InputError, Problem

__all__ = ["routes", "wait_seconds"]


def wait_seconds(request: Request, most: float) -> float:
    """The ``wait`` query parameter: seconds, 0 (the default) to ``most`` (api_wait_max)."""
    text = request.query_params.get("wait")
    if text is None:
        return 0.0
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value <= most:  # NaN fails too
        raise InputError(
            [Problem("query", "wait", f"seconds from 0 to {most:g} (api_wait_max); got {text!r}")]
        )
    return value


def _event_id(request: Request) -> str:
    text = request.path_params["event_id"]
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise InputError([Problem("path", "event_id", "not a UUID")]) from None


class _Endpoints:
    """The endpoints, on one service."""

    def __init__(self, service: Service) -> None:
        self._service = service
        self._most = service.settings.api_wait_max
        self._database = service.runtime.database

    async def _state(self, event_id: str) -> str | None:
        states = await self._service.run(lambda: event_states(self._database, [event_id]))
        return states.get(event_id)

    async def get_logout(self, request: Request) -> Response:
        self._service.auth.require(request, "read")
        event_id = _event_id(request)
        wait = wait_seconds(request, self._most)
        state = await self._state(event_id)
        if state is None:
            raise ApiProblem(
                404, "unknown event", f"no event {event_id} was accepted; publish it first"
            )
        completed = state == "completed"
        timed_out = False
        if not completed and state != "rejected" and wait > 0:
            completion = await self._service.waiter.await_completion(event_id, wait)
            completed, timed_out = completion.completed, completion.timed_out
            state = await self._state(event_id) or state
        items = await self._service.run(lambda: delivery_states(self._database, event_id))
        answer = LogoutAnswer(
            event_id=event_id,
            status=state,
            completed=completed,
            timed_out=timed_out,
            deliveries=Tally.of(i.status for i in items).as_detail(),
            items=[
                DeliveryItem(
                    delivery_id=i.delivery_id,
                    provider=i.provider,
                    status=i.status,
                    attempts=i.attempts,
                )
                for i in items
            ],
        )
        return JSONResponse(answer.model_dump(mode="json"))

    async def get_plan(self, request: Request) -> Response:
        self._service.auth.require(request, "read")
        plan_id = request.path_params["plan_id"]
        if not 1 <= len(plan_id) <= 255:
            raise InputError([Problem("path", "plan_id", "1 to 255 characters")])
        wait = wait_seconds(request, self._most)
        found = await self._service.waiter.await_plan(plan_id, wait)
        if found.plan is None:
            raise ApiProblem(
                404,
                "no plan",
                f"plan {plan_id!r} is not built"
                + (f" after waiting {wait:g} s" if wait else "; ask with ?wait=seconds"),
            )
        return JSONResponse(found.plan.model_dump(mode="json"))

    async def get_timeline(self, request: Request) -> Response:
        self._service.auth.require(request, "read")
        event_id = _event_id(request)

        def read() -> Timeline | None:
            with self._database() as db:
                return read_timeline(db, event_id)

        timeline = await self._service.run(read)
        if timeline is None:
            raise ApiProblem(
                404, "unknown event", f"no audit record or delivery of event {event_id}"
            )
        page = render_timeline(timeline)
        return HTMLResponse(page.html, headers=dict(page.headers))


def routes(service: Service) -> list[Route]:
    ends = _Endpoints(service)
    return [
        Route("/v1/logouts/{event_id}", ends.get_logout, methods=["GET"], name="logout"),
        Route(
            "/v1/logouts/{event_id}/timeline", ends.get_timeline, methods=["GET"], name="timeline"
        ),
        Route("/v1/plans/{plan_id}", ends.get_plan, methods=["GET"], name="plan"),
    ]
