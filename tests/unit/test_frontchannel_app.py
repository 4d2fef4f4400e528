"""The mountable front-channel app (Starlette TestClient, SQLite, plans built by the real
pipeline): stage routing, strict input checks, idempotent outcomes per entry, SP answers
verified, and the IdP's LogoutResponse to an SP that started the logout."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from lxml import etree
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from orchestrator import Runtime, Settings
from orchestrator.audit import AuditQuery, query_audit
from orchestrator.frontchannel.app import create_app
from orchestrator.logout import LogoutEngine
from orchestrator.plans import load_plan
from orchestrator.sender import HttpSender
from schemas import AuditRecord, LogoutPlan
from tests.saml_support import (
    SP_ENTITY,
    KeyPair,
    make_pair,
    onelogin_settings,
    sp_logout_response,
)

from .conftest import make_event

P = "{urn:oasis:names:tc:SAML:2.0:protocol}"
PARTIAL = "urn:oasis:names:tc:SAML:2.0:status:PartialLogout"


def _providers(sp: KeyPair) -> str:
    return f"""
[[providers]]
name = "wiki"
protocol = "oidc"
client_id = "wiki"
frontchannel_logout_uri = "https://wiki.example.com/fc"
logout_method = "frontchannel"

[[providers]]
name = "chat"
protocol = "oidc"
client_id = "chat"
backchannel_logout_uri = "https://chat.example.com/bc"

[[providers]]
name = "payroll"
protocol = "saml"
entity_id = "{SP_ENTITY}"
sls_url = "https://payroll.example.com/sls"
sls_binding = "post"
sp_certificate = "{sp.cert_path}"
require_signed_responses = true
"""


class World:
    """A runtime with OIDC and SAML, its processor, the SP's keys and the app's client."""

    def __init__(self, runtime: Runtime, sp: KeyPair, idp: KeyPair) -> None:
        self.runtime = runtime
        self.sp = sp
        self.idp = idp
        self.processor: LogoutEngine = runtime.processor(schedule=lambda *_: None)
        self.client = TestClient(create_app(runtime, next_url="/bye"), follow_redirects=False)
        self.backchannel = 200

    def logout(self, plan_id: str, *providers: str, **fields: Any) -> LogoutPlan:
        """Alice's session with ``providers``, ended with a plan (``logout.user`` unless
        ``fields`` make it a ``logout.provider``)."""
        session = f"s-{plan_id}"
        lines = [f'{{"kind": "session", "session_id": "{session}", "user_id": "alice"}}']
        for name in providers:
            ids = (
                f'"name_id": "alice@example.com", "session_index": "idx-{name}"'
                if name == "payroll"
                else f'"sid": "sid-{name}"'
            )
            lines.append(
                f'{{"kind": "provider_session", "session_id": "{session}", '
                f'"provider": "{name}", {ids}}}'
            )
        self.runtime.registry.import_lines(lines)
        kind = "logout.provider" if "provider" in fields else "logout.user"
        event = make_event(kind, session_id=session, plan_id=plan_id, **fields)
        self.processor.handle(event, f"m-{plan_id}")
        plan = load_plan(self.runtime.database, plan_id)
        assert plan is not None
        return plan

    def audit(self, kind: str) -> list[AuditRecord]:
        with self.runtime.database() as db:
            return query_audit(db, AuditQuery(type=kind, limit=None))

    def answer(self, plan: LogoutPlan, signer: KeyPair | None = None, **status: str) -> str:
        """The SP's signed LogoutResponse to the plan's native step, as a form value;
        ``status`` (``status``, ``substatus``, ``status_message``) as the SP sets it."""
        entry = plan.stages[-1].entries[0]
        request_id = etree.fromstring(base64.b64decode(entry.form.get("SAMLRequest", ""))).get("ID")
        settings = onelogin_settings(self.idp.cert_pem, entry.url, want_signed=False)
        xml = sp_logout_response(settings, request_id or "", signer=signer or self.sp, **status)
        return base64.b64encode(xml).decode()


@pytest.fixture
def world(settings: Settings, tmp_path: Path) -> Iterator[World]:
    sp, idp = make_pair(tmp_path, "sp"), make_pair(tmp_path, "idp")
    runtime = Runtime.start(
        settings.with_overrides(
            protocols=["oidc", "saml"],
            issuer="https://idp.test",
            protocol_settings={
                "saml": {"key_file": str(idp.key_path), "cert_file": str(idp.cert_path)}
            },
        )
    )
    runtime.registry.load_providers_file(_providers(sp), "providers.toml")
    holder: list[World] = []
    runtime._sender = HttpSender(
        transport=httpx.MockTransport(lambda _: httpx.Response(holder[0].backchannel))
    )
    holder.append(World(runtime, sp, idp))
    yield holder[0]
    holder[0].client.close()
    runtime.close()


def report(world: World, plan_id: str, body: Any, **headers: str) -> httpx2.Response:
    return world.client.post(f"/plans/{plan_id}/report", json=body, headers=headers)


def frame(entry_id: str, outcome: str, elapsed_ms: int) -> dict[str, Any]:
    """An iframe page's report of one frame."""
    return {"entry_id": entry_id, "outcome": outcome, "elapsed_ms": elapsed_ms}


def status_codes(done: httpx2.Response) -> list[str | None]:
    """The status codes (top-level first) of the LogoutResponse in the final page's form."""
    value = re.search(r'name="SAMLResponse" value="([^"]+)"', done.text)
    assert value is not None
    response = etree.fromstring(base64.b64decode(value.group(1)))
    return [c.get("Value") for c in response.iter(f"{P}StatusCode")]


def test_the_plan_leads_through_its_stages(world: World) -> None:
    """start → iframe → native step → (answer) → native → done → next_url."""
    plan = world.logout("p-1", "wiki", "payroll")
    [wiki] = plan.stages[1].entries
    [payroll] = plan.stages[2].entries
    assert world.client.get("/plans/p-1").headers["location"] == "/plans/p-1/iframe"
    page = world.client.get("/plans/p-1/iframe")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    nonce = re.search(r"'nonce-([^']+)'", csp)
    assert nonce is not None
    assert f'<script nonce="{nonce.group(1)}">' in page.text
    assert "frame-src https://wiki.example.com;" in csp
    assert page.headers["cache-control"] == "no-store"

    answer = report(
        world, "p-1", {"entry_id": wiki.entry_id, "outcome": "loaded", "elapsed_ms": 40}
    )
    assert answer.json() == {"entry_id": wiki.entry_id, "recorded": True, "outcome": "loaded"}
    native = world.client.get("/plans/p-1/native")
    assert native.headers["location"] == f"/plans/p-1/native/{payroll.entry_id}"
    step = world.client.get(native.headers["location"])
    assert step.status_code == 200
    assert 'action="https://payroll.example.com/sls"' in step.text
    assert (
        "form-action 'self' https://payroll.example.com;" in step.headers["content-security-policy"]
    )

    back = world.client.post(
        "/native/return",
        data={"SAMLResponse": world.answer(plan), "RelayState": payroll.delivery_id},
    )
    assert back.status_code == 303
    assert back.headers["location"] == "/plans/p-1/native"
    assert world.client.get("/plans/p-1/native").headers["location"] == "/plans/p-1/done"
    assert world.client.get("/plans/p-1/done").headers["location"] == "/bye"
    [loaded] = world.audit("frontchannel.loaded")
    [completed] = world.audit("frontchannel.completed")
    assert (loaded.provider, loaded.outcome, loaded.user_id) == ("wiki", "loaded", "alice")
    assert loaded.detail["elapsed_ms"] == 40
    assert (completed.provider, completed.outcome) == ("payroll", "success")
    assert completed.detail["delivery_id"] == payroll.delivery_id
    assert completed.detail["plan_id"] == "p-1"


def test_reports_are_idempotent_per_entry(world: World) -> None:
    """The first outcome of an entry stands; later ones are answered, not recorded."""
    plan = world.logout("p-2", "wiki")
    [wiki] = plan.stages[1].entries
    first = report(
        world, "p-2", {"entry_id": wiki.entry_id, "outcome": "timed_out", "elapsed_ms": 5}
    )
    again = report(world, "p-2", {"entry_id": wiki.entry_id, "outcome": "loaded", "elapsed_ms": 9})
    assert first.json()["recorded"] is True
    assert again.json() == {"entry_id": wiki.entry_id, "recorded": False, "outcome": "timed_out"}
    assert len(world.audit("frontchannel.timed_out")) == 1
    assert world.audit("frontchannel.loaded") == []


@pytest.mark.parametrize(
    ("body", "headers", "status", "message"),
    [
        ({"entry_id": "x", "outcome": "loaded", "elapsed_ms": 1}, {}, 400, "no iframe entry 'x'"),
        ({"entry_id": "E", "outcome": "done", "elapsed_ms": 1}, {}, 400, "outcome"),
        ({"entry_id": "E", "outcome": "loaded", "elapsed_ms": -1}, {}, 400, "elapsed_ms"),
        ({"entry_id": "E", "outcome": "loaded", "elapsed_ms": "1"}, {}, 400, "elapsed_ms"),
        ({"entry_id": "E", "outcome": "loaded", "elapsed_ms": 1, "x": 1}, {}, 400, "x: Extra"),
        ({"entry_id": "E", "outcome": "loaded"}, {}, 400, "elapsed_ms: Field required"),
        ({"entry_id": "E" * 5000, "outcome": "loaded", "elapsed_ms": 1}, {}, 413, "exceeds 2048"),
        (
            {"entry_id": "E", "outcome": "loaded", "elapsed_ms": 1},
            {"content-type": "text/plain"},
            415,
            "application/json",
        ),
    ],
)
def test_report_input_is_checked_strictly(
    world: World, body: dict[str, Any], headers: dict[str, str], status: int, message: str
) -> None:
    plan = world.logout("p-3", "wiki")
    [wiki] = plan.stages[1].entries
    if body.get("entry_id") == "E":
        body = {**body, "entry_id": wiki.entry_id}
    response = report(world, "p-3", body, **headers)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    assert world.audit("frontchannel.loaded") == []


def test_unknown_plans_and_entries(world: World) -> None:
    """Unknown plan: 404 on every page; an entry of the wrong stage or unknown: 400."""
    plan = world.logout("p-4", "wiki", "payroll")
    [wiki] = plan.stages[1].entries
    for path in ("/plans/nope", "/plans/nope/iframe", "/plans/nope/native", "/plans/nope/done"):
        response = world.client.get(path)
        assert response.status_code == 404
        assert "no logout plan 'nope'" in response.text
    assert report(world, "nope", {}).status_code == 404
    step = world.client.get(f"/plans/p-4/native/{wiki.entry_id}")
    assert step.status_code == 400
    assert "no native entry" in step.text
    skip = world.client.post("/plans/p-4/native/zz/skip", data={"reason": "timeout"})
    assert skip.status_code == 400


def test_skip_is_recorded_once_and_the_step_is_not_run_again(world: World) -> None:
    plan = world.logout("p-5", "payroll")
    [payroll] = plan.stages[1].entries
    base = f"/plans/p-5/native/{payroll.entry_id}"
    assert world.client.post(f"{base}/skip", data={"reason": "later"}).status_code == 400
    extra = world.client.post(f"{base}/skip", data={"reason": "timeout", "x": "1"})
    assert extra.status_code == 400
    as_json = world.client.post(f"{base}/skip", json={"reason": "timeout"})
    assert as_json.status_code == 415
    skipped = world.client.post(f"{base}/skip", data={"reason": "timeout"})
    assert skipped.headers["location"] == "/plans/p-5/native"
    assert world.client.get(base).headers["location"] == "/plans/p-5/native"
    late = world.client.post(
        "/native/return",
        data={"SAMLResponse": world.answer(plan), "RelayState": payroll.delivery_id},
    )
    assert late.status_code == 303  # the chain goes on; the skip stands
    [record] = world.audit("frontchannel.skipped")
    assert (record.provider, record.detail["reason"]) == ("payroll", "timeout")
    assert world.audit("frontchannel.completed") == []


def test_a_bad_answer_is_recorded_as_failed(world: World, tmp_path: Path) -> None:
    """Signed by another key, or answering another request: failed, with the reason."""
    plan = world.logout("p-6", "payroll")
    [payroll] = plan.stages[1].entries
    stranger = make_pair(tmp_path, "stranger")
    response = world.client.post(
        "/native/return",
        data={
            "SAMLResponse": world.answer(plan, signer=stranger),
            "RelayState": payroll.delivery_id,
        },
    )
    assert response.status_code == 303
    [record] = world.audit("frontchannel.completed")
    assert record.outcome == "failed"
    assert "does not verify" in record.detail["error"]
    assert "SAMLResponse" not in str(record.detail)


def test_an_sp_without_the_session_is_a_failure_with_its_status(world: World) -> None:
    """Shibboleth's answer when it holds no session (Responder / PartialLogout and a
    message): failed, and the record carries the SP's codes and message field by field."""
    plan = world.logout("p-7", "payroll")
    [payroll] = plan.stages[1].entries
    responder = "urn:oasis:names:tc:SAML:2.0:status:Responder"
    partial = "urn:oasis:names:tc:SAML:2.0:status:PartialLogout"
    value = world.answer(
        plan, status=responder, substatus=partial, status_message="No active session"
    )
    response = world.client.post(
        "/native/return", data={"SAMLResponse": value, "RelayState": payroll.delivery_id}
    )
    assert response.status_code == 303
    [record] = world.audit("frontchannel.completed")
    assert record.outcome == "failed"
    assert record.detail["sp_status"] == {
        "codes": [responder, partial],
        "message": "No active session",
    }
    assert record.detail["error"] == f"LogoutResponse status {responder} / {partial}: " + (
        "No active session"
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"SAMLResponse": "PHg+"}, "no handler recognises this answer"),
        ({"SAMLResponse": "PHg+", "RelayState": "unknown"}, "names no step"),
    ],
)
def test_an_answer_must_name_a_step(world: World, data: dict[str, str], message: str) -> None:
    world.logout("p-7", "payroll")
    response = world.client.post("/native/return", data=data)
    assert response.status_code == 400
    assert message in response.text
    assert world.client.get("/native/return").status_code == 400


def test_an_answer_inside_a_frame_just_ends_the_frame(world: World) -> None:
    """An iframe entry's SP answering inside its frame gets an empty page (so the frame
    loads); the frame's outcome stays what the iframe page reports."""
    plan = world.logout("p-14", "wiki")
    [wiki] = plan.stages[1].entries
    response = world.client.get(f"/native/return?SAMLResponse=x&RelayState={wiki.delivery_id}")
    assert response.status_code == 200
    assert response.headers["content-security-policy"] == "default-src 'none'"
    assert world.audit("frontchannel.completed") == []


def test_sp_started_logout_gets_partial_when_a_frame_timed_out(world: World) -> None:
    """The last step POSTs the IdP's signed LogoutResponse to the starting SP: Success,
    with PartialLogout because wiki's frame timed out."""
    plan = world.logout(
        "p-8",
        "wiki",
        "payroll",
        provider="payroll",
        full_logout=True,
        in_response_to="_sp-1",
        relay_state="rs-1",
    )
    [wiki] = plan.stages[1].entries
    report(world, "p-8", frame(wiki.entry_id, "timed_out", 9))
    done = world.client.get("/plans/p-8/done")
    assert done.status_code == 200
    assert "form-action https://payroll.example.com;" in done.headers["content-security-policy"]
    assert 'name="RelayState" value="rs-1"' in done.text
    assert status_codes(done)[-1] == PARTIAL
    assert (
        'InResponseTo="_sp-1"'
        in base64.b64decode(
            re.findall(r'name="SAMLResponse" value="([^"]+)"', done.text)[0]
        ).decode()
    )


def test_sp_started_logout_gets_success_when_all_went_well(world: World) -> None:
    world.logout("p-9", "wiki", "chat", provider="chat", full_logout=True, in_response_to="_x")
    plan = world.logout("p-10", "wiki", provider="payroll", full_logout=True, in_response_to="_y")
    [wiki] = plan.stages[1].entries
    report(world, "p-10", frame(wiki.entry_id, "loaded", 9))
    done = world.client.get("/plans/p-10/done")
    assert status_codes(done) == ["urn:oasis:names:tc:SAML:2.0:status:Success"]


def test_a_failed_backchannel_delivery_makes_the_answer_partial(world: World) -> None:
    world.backchannel = 400
    world.logout(
        "p-11", "chat", "payroll", provider="payroll", full_logout=True, in_response_to="_z"
    )
    # payroll (the starter) has its own native step: answer it, so only chat can be partial.
    plan = load_plan(world.runtime.database, "p-11")
    assert plan is not None
    [payroll] = plan.stages[1].entries
    world.client.post(
        "/native/return",
        data={"SAMLResponse": world.answer(plan), "RelayState": payroll.delivery_id},
    )
    done = world.client.get("/plans/p-11/done")
    value = re.search(r'name="SAMLResponse" value="([^"]+)"', done.text)
    assert value is not None
    codes = [
        c.get("Value")
        for c in etree.fromstring(base64.b64decode(value.group(1))).iter(f"{P}StatusCode")
    ]
    assert codes[-1] == PARTIAL


def test_mounted_under_a_prefix(world: World) -> None:
    """Every link and redirect carries the mount path."""
    plan = world.logout("p-12", "wiki", "payroll")
    outer = Starlette(routes=[Mount("/logout", app=create_app(world.runtime, next_url="/bye"))])
    with TestClient(outer, follow_redirects=False) as client:
        assert client.get("/logout/plans/p-12").headers["location"] == "/logout/plans/p-12/iframe"
        page = client.get("/logout/plans/p-12/iframe")
        assert '"report_url":"/logout/plans/p-12/report"' in page.text
        assert '"next_url":"/logout/plans/p-12/native"' in page.text
        [payroll] = plan.stages[2].entries
        step = client.get(f"/logout/plans/p-12/native/{payroll.entry_id}")
        assert f'action="/logout/plans/p-12/native/{payroll.entry_id}/skip"' in step.text


def test_next_url_is_checked_and_may_depend_on_the_plan(world: World) -> None:
    with pytest.raises(ValueError, match="next_url"):
        create_app(world.runtime, next_url="javascript:alert(1)")
    world.logout("p-13", "wiki")
    app = create_app(world.runtime, next_url=lambda plan: f"https://idp.test/bye?u={plan.user_id}")
    with TestClient(app, follow_redirects=False) as client:
        assert client.get("/plans/p-13/done").headers["location"] == "https://idp.test/bye?u=alice"
