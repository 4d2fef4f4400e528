"""The HTTP service while its broker is down: /readyz says so (503 naming it), accepted events
wait in the outbox (202, counted as queued), and both recover once Redis is back. While its
database is down: routes answer 503 problems, /metrics still serves the counters."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from orchestrator.store import OutboxRow

from .api_server import start_api
from .servers import OwnPostgres, OwnRedis
from .support import Stack, logout_event

pytestmark = pytest.mark.integration


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    """This test's own PostgreSQL cluster, removed afterwards."""
    server = OwnPostgres()
    server.start()
    try:
        yield server
    finally:
        server.remove()


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
        assert body["checks"]["broker"] == "unreachable", body
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


def test_database_down_then_back(world: Stack, own_postgres: OwnPostgres) -> None:
    """PostgreSQL stopped: a database route answers a 503 problem with Retry-After (no driver
    text), /readyz names the database without its URL, /metrics serves the counters without
    the gauges; PostgreSQL back: all answer again."""
    world.database_url = own_postgres.create_database()
    api = start_api(world)
    try:
        own_postgres.stop()
        with api.client("read") as client:
            route = client.get(f"/v1/logouts/{uuid.uuid4()}")
            ready = client.get("/readyz")
            metrics = client.get("/metrics")
        assert route.status_code == 503, route.text
        assert route.headers["content-type"].startswith("application/problem+json")
        assert route.headers["retry-after"] == "1"
        assert route.json()["title"] == "unavailable", route.text
        for answer in (route, ready):
            assert str(own_postgres.port) not in answer.text, answer.text
            assert "postgres" not in answer.text.lower(), answer.text
            assert "connection" not in answer.text.lower(), answer.text
        assert ready.status_code == 503, ready.text
        assert ready.json()["checks"] == {"database": "unreachable", "broker": "ok"}, ready.text
        assert metrics.status_code == 200, metrics.text
        assert "logout_http_requests_total" in metrics.text
        assert "logout_deliveries_retrying" not in metrics.text
        assert "Traceback" not in api.output()

        own_postgres.start()
        with api.client("read") as client:
            assert client.get("/readyz").status_code == 200
            assert client.get(f"/v1/logouts/{uuid.uuid4()}").status_code == 404
            assert "logout_deliveries_retrying" in client.get("/metrics").text
    finally:
        api.stop()
