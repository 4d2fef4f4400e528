"""``POST /v1/events``: durable intake, validated exactly as ``publish`` validates.

The body is one event object, a JSON array of them, or JSON lines
(``application/x-ndjson``). Nothing of a batch with a bad event is accepted (422, every
problem named). Events whose ``event_id`` is already known are not sent again: their current
state is answered (200 when every event was known). The others are written to the outbox and
enqueued before the answer (202): once it is sent, they are accepted, even if the broker then
loses them (see *Crash safety* in the README).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.body import JSON_TYPES, NDJSON, read_json
from api.models import AcceptedEvent, EventsAnswer
from api.service import Service
from orchestrator.event_status import event_states
from orchestrator.publishing import validate_events
from orchestrator.validation import parse_event_lines
from schemas import Event
from schemas.errors import InputError, Problem

__all__ = ["routes"]


def _parse(raw: Any, kind: str) -> list[Event]:
    if kind == NDJSON:
        return parse_event_lines(raw)
    if isinstance(raw, list):
        if not raw:
            raise InputError([Problem("body", "", "an empty array; send at least one event")])
        return validate_events(raw)
    if isinstance(raw, dict):
        return validate_events([raw])
    raise InputError([Problem("body", "", "send an event object or a JSON array of events")])


def routes(service: Service) -> list[Route]:
    limit = service.settings.api_body_limit

    async def post_events(request: Request) -> Response:
        service.auth.require(request, "events:write")
        raw, kind = await read_json(request, limit, types=JSON_TYPES)
        # One hop to a worker thread: validation, the state lookup, the outbox and the enqueue.
        answer, created = await service.run(lambda: _accept(service, _parse(raw, kind)))
        return JSONResponse(answer.model_dump(mode="json"), 202 if created else 200)

    return [Route("/v1/events", post_events, methods=["POST"], name="events")]


def _accept(service: Service, events: list[Event]) -> tuple[EventsAnswer, bool]:
    """Publish the events not known yet (the first of repeated ids in one batch); the
    answer, and whether any was new."""
    known = event_states(service.runtime.database, [str(e.event_id) for e in events])
    fresh: dict[str, Event] = {}
    for event in events:
        event_id = str(event.event_id)
        if event_id not in known:
            fresh.setdefault(event_id, event)
    queued = service.publisher.enqueue(fresh.values()).pending if fresh else 0
    items = [
        AcceptedEvent(
            event_id=str(e.event_id),
            type=e.type,
            status=known.get(str(e.event_id), "accepted"),
        )
        for e in events
    ]
    return EventsAnswer(events=items, queued=queued), bool(fresh)
