"""The operator's read-only views over real HTTP (``serve``, scope ``read``), against
PostgreSQL, a real worker and a relying party on 127.0.0.1: the same rows the CLI lists."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.outbox import OutboxMessage
from orchestrator.store import RejectedEvent

from .api_server import start_api
from .support import Stack, logout_event, publish, wait_settled
from .test_backchannel_http import DELIVERY_SETTINGS, Recorder, with_http_providers
from .test_operations_cli import _json_lines, _ok, endpoint  # noqa: F401  (endpoint: fixture)

pytestmark = pytest.mark.integration


def test_deliveries_rejected_events_and_providers_over_http(
    stack: Stack,
    tmp_path: Path,
    endpoint: Recorder,  # noqa: F811
) -> None:
    urls = {"ok": f"{endpoint.base_url}/ok", "bad": f"{endpoint.base_url}/bad"}
    plugin_env = with_http_providers(stack, tmp_path, urls, "s-api-ops")
    stack.start_worker({**DELIVERY_SETTINGS, **plugin_env})
    logout = logout_event("s-api-ops")
    publish(stack, logout)
    invalid = {**logout_event("s-x"), "occurred_at": "2026-11-29T14:42:00"}
    with stack.raw_sender() as send:
        queue = f"{stack.namespace}.events"
        send(OutboxMessage("m-naive", invalid["event_id"], queue, "handle_event", invalid))
    wait_settled(stack, logout["event_id"], 2)
    stack.wait_for(lambda: stack.count(RejectedEvent) == 1, what="the rejection")
    api = start_api(stack, plugin_env)
    try:
        with api.client("read") as client:
            failed = client.get("/v1/deliveries", params={"status": "failed"}).json()
            cli = _json_lines(_ok(stack.cli("deliveries", "list", "--status", "failed", "--json")))
            assert failed["total"] == 1
            same = ("id", "event_id", "status", "attempts", "last_status_code", "last_error")
            assert [{k: d[k] for k in same} for d in failed["deliveries"]] == [
                {k: d[k] for k in same} for d in cli
            ]
            assert failed["deliveries"][0]["provider"] == "rp-bad"
            cut = client.get(
                "/v1/deliveries", params={"event": logout["event_id"][:8], "limit": "1"}
            ).json()
            assert (len(cut["deliveries"]), cut["total"]) == (1, 2)
            rejected = client.get("/v1/rejected-events").json()
            assert rejected["total"] == 1
            [item] = rejected["rejected_events"]
            assert item["message_id"] == "m-naive"
            assert item["problems"] == ["event: occurred_at: Input should have timezone info"]
            providers = client.get("/v1/providers").json()["providers"]
            assert [(p["name"], p["method"], p["open_sessions"]) for p in providers] == [
                ("rp-bad", "backchannel", 0),
                ("rp-ok", "backchannel", 0),
            ]
            bad = client.get("/v1/deliveries", params={"since": "soon", "status": "lost"})
            assert bad.status_code == 422
            fields = {e["field"] for e in bad.json()["errors"]}
            assert fields <= {"since", "status"}
            assert fields
            over = client.get("/v1/rejected-events", params={"limit": "1001"})
            assert over.status_code == 422
            assert over.json()["errors"][0]["field"] == "limit"
            paths = client.get("/v1/openapi.json").json()["paths"]
            assert {"/v1/deliveries", "/v1/rejected-events", "/v1/providers"} <= set(paths)
        with api.client() as anonymous:
            assert anonymous.get("/v1/providers").status_code == 401
        with api.client("events") as writer:
            assert writer.get("/v1/deliveries").status_code == 403
    finally:
        api.stop()
