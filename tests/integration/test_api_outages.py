"""The HTTP service while its broker is down: /readyz says so (503 naming it), accepted events
wait in the outbox (202, counted as queued), and both recover once Redis is back."""

from __future__ import annotations

import pytest

from orchestrator.store import OutboxRow

from .api_server import start_api
from .servers import OwnRedis
from .support import Stack, logout_event

pytestmark = pytest.mark.integration


def test_broker_down_then_back(world: Stack, own_redis: OwnRedis) -> None:
    """/readyz 503 naming the broker; POST /v1/events still accepts durably; then ready."""
    api = start_api(world)
    try:
        own_redis.stop()
        with api.client() as client:
            down = client.get("/readyz")
        assert down.status_code == 503, down.text
        assert down.headers["content-type"].startswith("application/problem+json")
        body = down.json()
        assert body["checks"]["database"] == "ok", body
        assert body["checks"]["schema"] == "ok", body
        assert "broker unreachable" in body["checks"]["broker"], body
        assert "broker" in body["detail"], body

        event = logout_event("s-1")
        with api.client("events") as client:
            kept = client.post("/v1/events", json=event)
        assert kept.status_code == 202, kept.text
        assert kept.json()["queued"] == 1, kept.text
        with world.db() as db:
            row = db.query(OutboxRow).filter(OutboxRow.event_id == event["event_id"]).one()
            assert row.sent_at is None  # unsent: a worker's relay publishes it

        own_redis.start()
        with api.client() as client:
            assert client.get("/readyz").status_code == 200
    finally:
        api.stop()
