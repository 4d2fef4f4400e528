"""Stage plans built by the pipeline, and waiting for them (SQLite, in-process notifications)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import structlog
from prometheus_client import REGISTRY

from orchestrator import Runtime, Settings
from orchestrator.audit import AuditQuery, query_audit
from orchestrator.handlers import build_handler
from orchestrator.logging import configure_logging
from orchestrator.logout import LogoutEngine, Work
from orchestrator.logout.planning import plan_entry
from orchestrator.notices import NoticeBoard, make_notifier, notification_backend
from orchestrator.plans import PlanTimeouts, load_plan
from orchestrator.sender import HttpSender
from protocols import (
    Channel,
    FrontchannelEntry,
    LogoutContext,
    ProtocolHandler,
    ProviderInfo,
    ProviderSessionInfo,
)
from schemas import PlanEntry
from tests.saml_support import make_pair

from .conftest import make_event


def _providers(tmp_path: Path) -> str:
    sp = make_pair(tmp_path, "sp")
    return f"""
[[providers]]
name = "wiki"
protocol = "oidc"
client_id = "wiki"
frontchannel_logout_uri = "https://wiki.example.com/fc?lang=en"
frontchannel_logout_session_required = true
logout_method = "frontchannel"

[[providers]]
name = "chat"
protocol = "oidc"
client_id = "chat"
backchannel_logout_uri = "https://chat.example.com/bc"

[[providers]]
name = "hr"
protocol = "saml"
entity_id = "https://hr.example.com/sp"
sls_url = "https://hr.example.com/sls"
sls_binding = "redirect"
logout_method = "frontchannel_iframe"
sp_certificate = "{sp.cert_path}"

[[providers]]
name = "payroll"
protocol = "saml"
entity_id = "https://payroll.example.com/sp"
sls_url = "https://payroll.example.com/sls"
sls_binding = "post"
logout_method = "frontchannel_native"
sp_certificate = "{sp.cert_path}"
"""


@pytest.fixture
def mixed(settings: Settings, tmp_path: Path) -> Iterator[tuple[Runtime, LogoutEngine]]:
    """OIDC and SAML handlers, one provider of each kind, and a processor whose back-channel
    requests go to a MockTransport answering 200."""
    runtime = Runtime.start(settings.with_overrides(protocols=["oidc", "saml"]))
    runtime.registry.load_providers_file(_providers(tmp_path), "providers.toml")
    runtime._sender = HttpSender(transport=httpx.MockTransport(lambda _: httpx.Response(200)))
    yield runtime, runtime.processor(schedule=lambda *_: None)
    runtime.close()


def _session(runtime: Runtime, session_id: str, *providers: str) -> None:
    lines = [f'{{"kind": "session", "session_id": "{session_id}", "user_id": "alice"}}']
    for name in providers:
        ids = (
            f'"sid": "sid-{name}", "sub": "alice"'
            if name in ("wiki", "chat")
            else f'"name_id": "alice@example.com", "session_index": "idx-{name}"'
        )
        lines.append(
            f'{{"kind": "provider_session", "session_id": "{session_id}", '
            f'"provider": "{name}", {ids}}}'
        )
    runtime.registry.import_lines(lines)


def test_plan_has_explicit_stage_indexes(mixed: tuple[Runtime, LogoutEngine]) -> None:
    """Logout 0, iframe 1 (OIDC front-channel, SAML redirect), native 2 (SAML POST)."""
    runtime, processor = mixed
    _session(runtime, "s-1", "wiki", "chat", "hr", "payroll")
    event = make_event("logout.user", session_id="s-1", plan_id="p-1")
    processor.handle(event, "m-1")
    plan = load_plan(runtime.database, "p-1")
    assert plan is not None
    assert [(s.index, s.kind) for s in plan.stages] == [
        (0, "logout"),
        (1, "iframe_logout"),
        (2, "native_logout"),
    ]
    iframe, native = plan.stages[1], plan.stages[2]
    assert sorted(e.provider for e in iframe.entries) == ["hr", "wiki"]
    wiki = next(e for e in iframe.entries if e.provider == "wiki")
    query = parse_qs(urlsplit(wiki.url).query)
    assert query == {"lang": ["en"], "iss": [runtime.settings.issuer], "sid": ["sid-wiki"]}
    hr = next(e for e in iframe.entries if e.provider == "hr")
    assert {"SAMLRequest", "SigAlg", "Signature"} <= set(parse_qs(urlsplit(hr.url).query))
    [payroll] = native.entries
    assert (payroll.binding, payroll.url) == ("post", "https://payroll.example.com/sls")
    assert payroll.form["SAMLRequest"]
    assert payroll.form["RelayState"] == payroll.delivery_id
    assert payroll.timeout_ms == runtime.settings.frontchannel_native_timeout_ms
    assert plan.timeout_ms == runtime.settings.frontchannel_page_timeout_ms
    with runtime.database() as db:
        [built] = query_audit(db, AuditQuery(type="plan.built", limit=None))
        completed = query_audit(db, AuditQuery(type="logout.completed", limit=None))
    assert built.detail["stages"] == [
        {"index": 0, "kind": "logout", "entries": 0},
        {"index": 1, "kind": "iframe_logout", "entries": 2},
        {"index": 2, "kind": "native_logout", "entries": 1},
    ]
    assert completed[0].detail["deliveries"]["succeeded"] == 1  # chat, over the back-channel


def test_native_stage_follows_logout_when_there_is_no_iframe_stage(
    mixed: tuple[Runtime, LogoutEngine],
) -> None:
    runtime, processor = mixed
    _session(runtime, "s-2", "payroll", "chat")
    processor.handle(make_event("logout.user", session_id="s-2", plan_id="p-2"), "m-2")
    plan = load_plan(runtime.database, "p-2")
    assert plan is not None
    assert [(s.index, s.kind) for s in plan.stages] == [(0, "logout"), (1, "native_logout")]


def test_a_logout_without_browser_work_gets_a_plan_of_one_stage(
    mixed: tuple[Runtime, LogoutEngine],
) -> None:
    runtime, processor = mixed
    _session(runtime, "s-3", "chat")
    processor.handle(make_event("logout.user", session_id="s-3", plan_id="p-3"), "m-3")
    plan = load_plan(runtime.database, "p-3")
    assert plan is not None
    assert [(s.index, s.kind, s.entries) for s in plan.stages] == [(0, "logout", [])]
    processor.handle(make_event("logout.user", session_id="gone", plan_id="p-4"), "m-4")
    assert load_plan(runtime.database, "p-4") is not None  # the IdP is never left waiting


def test_sp_initiated_logout_plan_responds_to_the_sp(
    mixed: tuple[Runtime, LogoutEngine],
) -> None:
    runtime, processor = mixed
    _session(runtime, "s-5", "payroll", "wiki")
    event = make_event(
        "logout.provider",
        session_id="s-5",
        provider="payroll",
        full_logout=True,
        plan_id="p-5",
        in_response_to="_sp-req-1",
        relay_state="back-to-app",
    )
    processor.handle(event, "m-5")
    plan = load_plan(runtime.database, "p-5")
    assert plan is not None
    assert plan.respond_to is not None
    assert plan.respond_to.model_dump() == {
        "provider": "payroll",
        "protocol": "saml",
        "in_response_to": "_sp-req-1",
        "relay_state": "back-to-app",
    }


def test_waiter_returns_the_plan_when_it_is_built(
    mixed: tuple[Runtime, LogoutEngine],
) -> None:
    """A waiter blocked before the event is handled wakes on the notification."""
    runtime, processor = mixed
    assert notification_backend(runtime.settings) == "local"
    _session(runtime, "s-6", "wiki")
    waiter = runtime.waiter()
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(waiter.wait_plan("p-6", 30.0)))
    thread.start()
    time.sleep(0.2)
    began = time.monotonic()
    processor.handle(make_event("logout.user", session_id="s-6", plan_id="p-6"), "m-6")
    thread.join(timeout=10)
    assert time.monotonic() - began < 5.0
    [waited] = result
    assert not waited.timed_out
    assert waited.plan.plan_id == "p-6"
    waiter.close()


def test_waiter_times_out_cleanly(mixed: tuple[Runtime, LogoutEngine]) -> None:
    runtime, _ = mixed
    waiter = runtime.waiter()
    began = time.monotonic()
    result = waiter.wait_plan("never", 0.3)
    assert result.timed_out
    assert result.plan is None
    assert 0.25 < time.monotonic() - began < 5.0
    completion = waiter.wait_completion(str(uuid.uuid4()), 0.2)
    assert (completion.completed, completion.timed_out) == (False, True)
    waiter.close()


def test_await_completion_after_the_back_channel(mixed: tuple[Runtime, LogoutEngine]) -> None:
    """The async API returns once the logout completed, with delivery counts."""
    runtime, processor = mixed
    _session(runtime, "s-7", "chat", "wiki")
    event = make_event("logout.user", session_id="s-7", plan_id="p-7")
    waiter = runtime.waiter()

    async def scenario() -> tuple[Any, Any]:
        plan_task = asyncio.create_task(waiter.await_plan("p-7", 30.0))
        done_task = asyncio.create_task(waiter.await_completion(event["event_id"], 30.0))
        await asyncio.sleep(0.1)
        await asyncio.to_thread(processor.handle, event, "m-7")
        return await plan_task, await done_task

    plan, done = asyncio.run(scenario())
    waiter.close()
    assert plan.plan is not None
    assert [s.kind for s in plan.plan.stages] == ["logout", "iframe_logout"]
    assert done.completed
    assert done.deliveries["succeeded"] == 1
    assert done.deliveries["skipped"] == 1  # wiki: in the plan, carried out by the browser


@pytest.mark.parametrize(
    ("database_url", "broker_url", "backend"),
    [
        ("postgresql://nobody@127.0.0.1:1/none", "memory://", "postgresql"),
        (None, "redis://127.0.0.1:1/0", "redis"),
    ],
)
def test_a_notice_that_cannot_be_sent_never_fails_the_logout(
    settings: Settings, database_url: str | None, broker_url: str, backend: str
) -> None:
    """A notifier whose server is down logs and returns: waiters re-read on their own."""
    overrides: dict[str, Any] = {"broker_url": broker_url}
    if database_url is not None:
        overrides["database_url"] = database_url
    unreachable = settings.with_overrides(**overrides)
    assert notification_backend(unreachable) == backend
    notify = make_notifier(unreachable, NoticeBoard())
    notify([("plan:p-1", '{"plan_id": "p-1"}'), ("event:e-1", "")])
    notify.close()


def test_each_stored_plan_is_timed_and_counted(mixed: tuple[Runtime, LogoutEngine]) -> None:
    """Storing a plan observes its build time once and counts it (plan.built), however often
    its event is handled."""
    runtime, processor = mixed
    _session(runtime, "s-9", "wiki")

    def sample(name: str) -> float:
        return REGISTRY.get_sample_value(name) or 0.0

    timed, built = sample("logout_plan_build_seconds_count"), sample("logout_plans_built_total")
    event = make_event("logout.user", session_id="s-9", plan_id="p-9")
    processor.handle(event, "m-9")
    processor.handle(event, "m-9b")  # a duplicate builds nothing
    assert sample("logout_plan_build_seconds_count") == timed + 1
    assert sample("logout_plans_built_total") == built + 1


def test_a_plan_stored_before_form_still_reads() -> None:
    """An entry stored with ``saml_request``/``relay_state`` (before ``form``) reads as the
    same POST form, so a logout in flight across the upgrade keeps its native step."""
    stored = {
        "entry_id": "d-1",
        "delivery_id": "d-1",
        "provider": "payroll",
        "protocol": "saml",
        "binding": "post",
        "url": "https://payroll.example.com/sls",
        "saml_request": "PHg+",
        "relay_state": "d-1",
        "timeout_ms": 10000,
    }
    entry = PlanEntry.model_validate(stored)
    assert entry.form == {"SAMLRequest": "PHg+", "RelayState": "d-1"}
    assert PlanEntry.model_validate(entry.model_dump()) == entry


class _BuggyIframeHandler(ProtocolHandler):
    """A third-party front-channel handler whose entry raises a plain ValueError holding
    the session's sid."""

    protocol = "buggy"

    def channel(self, provider: ProviderInfo) -> Channel:
        return Channel.FRONTCHANNEL_IFRAME

    def frontchannel_entry(
        self, provider: ProviderInfo, session: ProviderSessionInfo, context: LogoutContext
    ) -> FrontchannelEntry:
        raise ValueError(f"no entry for {session.identifiers['sid']}")


def test_a_handler_bug_leaves_out_its_plan_entry_only(settings: Settings) -> None:
    """An entry whose handler raises anything but a DeliveryError is left out, its reason
    naming only the exception type (never the message with the sid)."""
    handler = build_handler(settings, _BuggyIframeHandler)
    now = datetime.now(UTC)
    work = Work(
        delivery_id="d-1",
        created_at=now,
        attempt=1,
        provider=ProviderInfo("portal", "buggy", True, False, {}),
        session=ProviderSessionInfo(1, "s-1", "alice", "portal", {"sid": "secret-sid"}),
        context=LogoutContext("e-1", "logout.user", "user", "d-1", 1, now),
        handler=handler,
    )
    configure_logging("INFO", "json")  # an earlier test may have left ERROR in force
    with structlog.testing.capture_logs() as logs:
        reason = plan_entry(work, PlanTimeouts())
    assert reason == "the 'buggy' protocol handler failed building the entry (ValueError)"
    [warned] = [log for log in logs if log.get("error") == "ValueError"]
    assert warned["delivery_id"] == "d-1"
    assert "secret-sid" not in str(logs)
