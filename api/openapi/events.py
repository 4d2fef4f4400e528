"""The paths of publishing events and following logouts (:mod:`api.routes.events`,
:mod:`api.routes.logouts`)."""

from __future__ import annotations

from typing import Any

from api.openapi.parts import BODY_ERRORS, json_answer, operation, path_param, ref, wait_param

__all__ = ["event_paths"]


def _publish() -> dict[str, Any]:
    event = ref("Event")
    return operation(
        "Publish events: recorded durably, then enqueued",
        "events:write",
        {
            "202": json_answer(ref("EventsAnswer"), "some events were new: accepted"),
            "200": json_answer(ref("EventsAnswer"), "every event was known: its state"),
        },
        body={
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"oneOf": [event, {"type": "array", "items": event}]}
                },
                "application/x-ndjson": {"schema": {"type": "string"}},
            },
        },
        errors=BODY_ERRORS,
    )


def event_paths(wait_max: float) -> dict[str, Any]:
    """``wait_max``: the largest ``?wait=`` accepted (``api_wait_max``)."""
    event_id = path_param("event_id", {"type": "string", "format": "uuid"})
    return {
        "/v1/events": {"post": _publish()},
        "/v1/logouts/{event_id}": {
            "get": operation(
                "A logout's state and deliveries; ?wait= until it completes",
                "read",
                {"200": json_answer(ref("LogoutAnswer"), "the logout")},
                parameters=[event_id, wait_param(wait_max)],
                errors=(404, 422),
            )
        },
        "/v1/logouts/{event_id}/timeline": {
            "get": operation(
                "A logout as a timeline for operators: an HTML page (no script)",
                "read",
                {
                    "200": {
                        "description": "the page: received, steps, each delivery's attempts",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    }
                },
                parameters=[event_id],
                errors=(404, 422),
            )
        },
        "/v1/plans/{plan_id}": {
            "get": operation(
                "A front-channel stage plan; ?wait= until it is built",
                "read",
                {"200": json_answer(ref("LogoutPlan"), "the plan")},
                parameters=[
                    path_param("plan_id", {"type": "string", "minLength": 1, "maxLength": 255}),
                    wait_param(wait_max),
                ],
                errors=(404, 422),
            )
        },
    }
