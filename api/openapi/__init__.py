"""``/v1/openapi.json``: the OpenAPI 3.1 document, generated from the pydantic models of
:mod:`api.models` and the event contract (:data:`schemas.Event`); one module per area's
paths, put together here."""

from __future__ import annotations

from typing import Any

from api.openapi.events import event_paths
from api.openapi.operations import health_paths, operator_paths
from api.openapi.parts import schemas
from api.openapi.sessions import session_paths, user_paths
from api.openapi.ssf import ssf_paths, ssf_push_path

__all__ = ["openapi_document"]


def openapi_document(
    wait_max: float = 30.0, *, ssf: bool = False, metrics_public: bool = False
) -> dict[str, Any]:
    """The document; ``wait_max`` is the largest ``?wait=`` accepted (``api_wait_max``);
    ``ssf``: the Shared Signals transmitter's routes are served (the ``ssf`` handler is
    enabled); ``metrics_public``: ``/metrics`` needs no token. Its query parameters are
    the only ones each operation takes (:mod:`api.query_params`)."""
    paths = {
        **event_paths(wait_max),
        **session_paths(),
        **user_paths(),
        **operator_paths(),
        "/v1/ssf/push/{stream}": ssf_push_path(),
        **health_paths(metrics_public=metrics_public),
        **(ssf_paths() if ssf else {}),
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "logout-orchestrator",
            "version": "1",
            "description": "Ingestion, waits, binding checks, users' sessions, operators' "
            "views, Shared Signals (push receiver, transmitter streams), health and metrics.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
