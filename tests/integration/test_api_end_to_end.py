"""Through the HTTP service end to end: an event posted over HTTP, its logout waited for
over HTTP, the delivery seen by a relying party on 127.0.0.1 and counted in the metrics of
the worker (two processes) and of the service."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .api_server import start_api
from .servers import RecordingEndpoint, server_port, serving
from .support import Stack, logout_event, wait_until
from .test_backchannel_http import with_http_providers

pytestmark = pytest.mark.integration


@pytest.fixture
def relying_party() -> Iterator[RecordingEndpoint]:
    with serving(RecordingEndpoint()) as server:
        yield server


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a scrape: (name, labels) -> value."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(text: str, name: str, **labels: str) -> float | None:
    return _samples(text).get((name, frozenset(labels.items())))


def test_post_wait_deliver_and_count(
    stack: Stack, tmp_path: Path, relying_party: RecordingEndpoint
) -> None:
    """POST /v1/events, then GET /v1/logouts/{id}?wait= returns once the RP was notified;
    the worker's /metrics (2 processes, at its ``metrics_host``) and the service's count it."""
    plugin_env = with_http_providers(stack, tmp_path, {"ok": relying_party.url()}, "s-api")
    metrics_port = server_port()
    worker_env = {
        **plugin_env,
        "LOGOUT_METRICS_PORT": str(metrics_port),
        "LOGOUT_METRICS_HOST": "127.0.0.1",
        # An address of no interface here (TEST-NET-1): metrics bound to it would fail.
        "LOGOUT_API_HOST": "192.0.2.1",
    }
    stack.start_worker(worker_env, processes=2)
    api = start_api(stack, plugin_env)
    try:
        event = logout_event("s-api")
        with api.client("all") as client:
            posted = client.post("/v1/events", json=event)
            assert posted.status_code == 202, posted.text
            waited = client.get(f"/v1/logouts/{event['event_id']}", params={"wait": "25"})
            assert waited.status_code == 200, waited.text
            logout = waited.json()
            assert logout["completed"] is True, logout
            assert logout["status"] == "completed", logout
            assert logout["deliveries"]["succeeded"] == 1, logout
            assert [(i["provider"], i["status"], i["attempts"]) for i in logout["items"]] == [
                ("rp-ok", "succeeded", 1)
            ]
            assert relying_party.bodies == [b"session=sid-ok"]
            service_metrics = client.get("/metrics").text
    finally:
        api.stop()

    worker_url = f"http://127.0.0.1:{metrics_port}/metrics"
    scraped: list[str] = []

    def counted() -> bool:
        try:
            scraped[:] = [httpx.get(worker_url, timeout=5).text]
        except httpx.TransportError:
            return False
        delivered = _value(
            scraped[0],
            "logout_deliveries_total",
            protocol="itproto",
            provider="rp-ok",
            status="succeeded",
        )
        return delivered == 1.0

    assert wait_until(counted, 20) is not None, scraped[-1] if scraped else "no answer"
    worker_metrics = scraped[0]
    assert _value(worker_metrics, "logout_logouts_completed_total", outcome="success") == 1.0
    assert _value(worker_metrics, "logout_events_total", type="logout.user", outcome="received")
    assert _value(worker_metrics, "logout_delivery_attempt_seconds_count") == 1.0
    assert "s-api" not in worker_metrics  # never a session id in a label
    assert (
        _value(
            service_metrics,
            "logout_http_requests_total",
            route="/v1/events",
            method="POST",
            status="202",
        )
        == 1.0
    )
    assert _value(service_metrics, "logout_deliveries_retrying") == 0.0
    assert _value(service_metrics, "logout_delivery_oldest_pending_seconds") == 0.0
