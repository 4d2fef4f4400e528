"""The operator's read-only views (:mod:`api.routes.operations`), health and metrics
(:mod:`api.routes.health`)."""

from __future__ import annotations

from typing import Any

from api.openapi.parts import json_answer, operation, query_param, ref

__all__ = ["health_paths", "operator_paths"]


def operator_paths() -> dict[str, Any]:
    since = query_param("since", {"type": "string"}, "at or after this time (RFC 3339, or a date)")
    limit = query_param("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "the latest N")
    statuses = ["pending", "retrying", "succeeded", "failed", "skipped"]
    return {
        "/v1/deliveries": {
            "get": operation(
                "Deliveries, the latest first cut to limit, listed oldest first",
                "read",
                {"200": json_answer(ref("DeliveriesAnswer"), "the deliveries")},
                parameters=[
                    query_param("status", {"type": "string", "enum": statuses}, "in this status"),
                    query_param("provider", {"type": "string"}, "to this provider"),
                    query_param("event", {"type": "string"}, "of this event (its id or a start)"),
                    since,
                    limit,
                ],
                errors=(422,),
            )
        },
        "/v1/rejected-events": {
            "get": operation(
                "Rejected events with their problems",
                "read",
                {"200": json_answer(ref("RejectedAnswer"), "the rejected events")},
                parameters=[since, limit],
                errors=(422,),
            )
        },
        "/v1/providers": {
            "get": operation(
                "Providers: protocol, method, enabled, open provider sessions",
                "read",
                {"200": json_answer(ref("ProvidersAnswer"), "the providers")},
            )
        },
    }


def health_paths(*, metrics_public: bool = False) -> dict[str, Any]:
    """Health, metrics (public when ``metrics_public``) and this document's own path."""
    return {
        "/healthz": {
            "get": operation("The process lives", None, {"200": json_answer(ref("Health"), "ok")})
        },
        "/readyz": {
            "get": operation(
                "Database, schema and broker answer",
                None,
                {"200": json_answer(ref("Health"), "ready")},
                errors=(503,),
            )
        },
        "/metrics": {
            "get": operation(
                "Prometheus metrics (public when metrics_public)",
                None if metrics_public else "read",
                {
                    "200": {
                        "description": "the text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            )
        },
        "/v1/openapi.json": {
            "get": operation(
                "This document",
                "read",
                {"200": json_answer({"type": "object"}, "the OpenAPI 3.1 document")},
            )
        },
    }
