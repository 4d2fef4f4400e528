"""One real logout as a timeline: a real worker logs alice out of two relying parties on
127.0.0.1, one of which fails once (503) then succeeds; ``audit show`` draws it in the
terminal (and ``--json`` says the same), and the service's page shows it in headless
Chromium behind the ``read`` scope."""

from __future__ import annotations

import json
import struct
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page

from orchestrator.timeline import Attempt
from orchestrator.timeline_text import attempt_summary, offset_text

from .api_server import start_api
from .browser import launch
from .servers import serving
from .support import Stack, audit_rows, logout_event, publish, wait_settled
from .test_backchannel_http import DELIVERY_SETTINGS, Recorder, with_http_providers

pytestmark = pytest.mark.integration

SESSION = "s-timeline"


@pytest.fixture
def relying_parties() -> Iterator[Recorder]:
    """``/flaky`` answers 503 the first time and 200 after; ``/ok`` answers 200."""
    with serving(Recorder()) as server:
        yield server


def _logout_with_a_retry(stack: Stack, tmp_path: Path, rps: Recorder) -> tuple[str, dict[str, str]]:
    """Run one logout through a real worker until it settled; its event id and the
    plugin's environment."""
    urls = {"flaky": f"{rps.base_url}/flaky", "ok": f"{rps.base_url}/ok"}
    plugin_env = with_http_providers(stack, tmp_path, urls, SESSION)
    stack.start_worker({**DELIVERY_SETTINGS, **plugin_env})
    event = logout_event(SESSION)
    publish(stack, event)
    event_id = str(event["event_id"])
    wait_settled(stack, event_id, 2)
    stack.wait_for(
        lambda: bool(audit_rows(stack, event_id, "logout.settled")), what="logout.settled"
    )
    assert rps.hits() == {"/flaky": 2, "/ok": 1}
    return event_id, plugin_env


def _attempt(data: dict[str, Any]) -> Attempt:
    """An attempt of ``audit show --json`` read back."""
    return Attempt(**{**data, "at": datetime.fromisoformat(data["at"])})


def _attempt_line(attempt: dict[str, Any]) -> str:
    """What the terminal prints of an attempt from its JSON: the same words."""
    parsed = _attempt(attempt)
    name = f"attempt {parsed.number}"
    return f"{name:<18}{parsed.outcome:<10} {attempt_summary(parsed)}"


def test_audit_show_draws_a_logout_with_a_retry(
    stack: Stack, tmp_path: Path, relying_parties: Recorder
) -> None:
    """The terminal timeline: received, the session ended, both deliveries with their
    attempts (the 503 retried, with its latency and error class), completed, settled; the
    --json timeline holds the same, line for line."""
    event_id, _ = _logout_with_a_retry(stack, tmp_path, relying_parties)
    shown = stack.cli("audit", "show", event_id[:13])
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    print(text)  # the drawing, for whoever reads the test's output
    lines = text.splitlines()
    assert lines[0].startswith(f"logout {event_id}  started 20")
    assert "settled after" in lines[0]
    assert lines[0].endswith(": success")
    assert "+0 ms     received          accepted   logout.user; by user" in text
    assert f"session ended     ended      session {SESSION} of alice" in text
    assert "deliveries: 2" in text
    assert "rp-flaky  back-channel  succeeded  after 2 attempts" in text
    assert "rp-ok  back-channel  succeeded  after 1 attempt " in text
    assert "retrying   HTTP 503; took " in text
    assert "; transient: HTTP 503; next try " in text
    order = ["received", "session ended", "deliveries: 2", "settled"]
    at = [next(i for i, line in enumerate(lines[1:]) if word in line) for word in order]
    assert at == sorted(at), text

    as_json = stack.cli("audit", "show", event_id, "--json")
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert data["event_id"] == event_id
    assert data["settled"] is True
    assert data["outcome"] == "success"
    flaky = next(d for d in data["deliveries"] if d["provider"] == "rp-flaky")
    attempts = flaky["attempts"]
    assert [(a["number"], a["outcome"], a["status_code"]) for a in attempts] == [
        (1, "retrying", 503),
        (2, "succeeded", 200),
    ]
    assert all(a["latency_ms"] is not None and a["latency_ms"] >= 0 for a in attempts)
    assert attempts[0]["error_class"] == "transient"
    assert attempts[0]["retry_in_ms"] > 0
    # Parity: every step and every attempt of the JSON is a line of the drawing.
    for step in data["steps"]:
        line = offset_text(step["offset_ms"]).ljust(10) + step["name"].ljust(18) + step["outcome"]
        assert line in text, f"{line!r} not drawn:\n{text}"
    for delivery in data["deliveries"]:
        for attempt in delivery["attempts"]:
            assert _attempt_line(attempt).rstrip() in text, text


def test_audit_show_refuses_an_unknown_or_ambiguous_id(
    stack: Stack, tmp_path: Path, relying_parties: Recorder
) -> None:
    """An id no record has, or the start of several, exits 2 naming the argument and the
    fix; nothing is drawn."""
    stack.seed(records=[{"kind": "session", "session_id": "s-a", "user_id": "bob"}])
    shared = "7e57a11e-0000-4000-8000-00000000000"
    ids = [f"{shared}1", f"{shared}2"]
    stack.start_worker()
    publish(stack, *(logout_event("s-a", event_id) for event_id in ids))
    stack.wait_for(
        lambda: all(audit_rows(stack, event_id, "event.received") for event_id in ids),
        what="both events received",
    )
    unknown = stack.cli("audit", "show", str(uuid.uuid4()))
    assert unknown.returncode == 2, unknown
    assert "Invalid value for 'EVENT_ID': no audit record or event has an id" in unknown.stderr
    assert unknown.stdout == ""
    ambiguous = stack.cli("audit", "show", "7e57A11E")
    assert ambiguous.returncode == 2, ambiguous
    assert f"is the start of several event ids: {ids[0]}, {ids[1]}; give more" in (
        ambiguous.stderr.replace("\n", " ")
    )
    assert "Traceback" not in unknown.stderr + ambiguous.stderr


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def _check_page(page: Page) -> None:
    """Received, each delivery with its attempts, settled: present and visible."""
    assert page.locator("#overview").is_visible()
    assert "success" in page.locator("#outcome").inner_text()
    for kind in ("event.received", "session.ended", "logout.settled"):
        step = page.locator(f'li.step[data-type="{kind}"]')
        assert step.count() == 1, kind
        assert step.is_visible(), kind
    flaky = page.locator('section.delivery[data-provider="rp-flaky"]')
    assert flaky.is_visible()
    attempts = flaky.locator("tr.attempt")
    assert attempts.count() == 2
    assert attempts.nth(0).get_attribute("data-outcome") == "retrying"
    assert "HTTP 503" in attempts.nth(0).inner_text()
    assert attempts.nth(1).get_attribute("data-outcome") == "succeeded"
    assert all(attempts.nth(n).is_visible() for n in range(2))
    ok = page.locator('section.delivery[data-provider="rp-ok"] tr.attempt')
    assert ok.count() == 1
    assert ok.is_visible()


def _same_as_the_json(page: Page, stack: Stack, event_id: str) -> None:
    """The page says what ``audit show --json`` says: each step's and each attempt's words,
    in the same order."""
    shown = stack.cli("audit", "show", event_id, "--json")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    steps = page.locator("li.step")
    assert steps.count() == len(data["steps"])
    for n, step in enumerate(data["steps"]):
        text = steps.nth(n).inner_text()
        assert step["name"] in text, text
        assert offset_text(step["offset_ms"]) in text, text
    for delivery in data["deliveries"]:
        rows = page.locator(f'section.delivery[data-provider="{delivery["provider"]}"] tr.attempt')
        assert rows.count() == len(delivery["attempts"])
        for n, attempt in enumerate(delivery["attempts"]):
            parsed = _attempt(attempt)
            cells = rows.nth(n).locator("td").all_inner_texts()
            assert cells == [
                str(parsed.number),
                offset_text(parsed.offset_ms),
                parsed.outcome,
                attempt_summary(parsed),
            ]


def test_the_timeline_page_in_chromium(
    stack: Stack, tmp_path: Path, relying_parties: Recorder
) -> None:
    """The page opened in headless Chromium with the read token as a bearer header: every
    part present and visible and saying what --json says, no CSP violation, a screenshot
    taken; printed (print media, a
    PDF) every part still there; without a token 401, with a token lacking the read scope
    403."""
    event_id, plugin_env = _logout_with_a_retry(stack, tmp_path, relying_parties)
    api = start_api(stack, plugin_env)
    url = f"{api.base_url}/v1/logouts/{event_id}/timeline"
    try:
        with launch() as (_, browser):
            reader = browser.new_context(
                extra_http_headers={"Authorization": f"Bearer {api.tokens['read']}"}
            )
            page = reader.new_page()
            problems: list[str] = []
            page.on("console", lambda message: problems.append(message.text))
            response = page.goto(url)
            assert response is not None
            assert response.status == 200, response.text()
            assert "default-src 'none'" in response.headers["content-security-policy"]
            _check_page(page)
            _same_as_the_json(page, stack, event_id)
            shot = tmp_path / "timeline.png"
            page.screenshot(path=str(shot), full_page=True)
            width, height = _png_size(shot)
            assert width > 0
            assert height > 0
            assert problems == [], problems  # a blocked style would be reported here

            page.emulate_media(media="print")  # printed: every part still there, in black
            _check_page(page)
            delivery = page.locator("section.delivery").first
            assert delivery.evaluate("e => getComputedStyle(e).breakInside") == "avoid"
            offset = page.locator("li.step .offset").first
            assert offset.evaluate("e => getComputedStyle(e).color") == "rgb(0, 0, 0)"
            printed = page.pdf(path=str(tmp_path / "timeline.pdf"))
            assert printed.startswith(b"%PDF")
            reader.close()

            anonymous = browser.new_context()
            refused = anonymous.new_page().goto(url)
            assert refused is not None
            assert refused.status == 401
            assert refused.headers["www-authenticate"].startswith("Bearer")
            anonymous.close()

            writer = browser.new_context(
                extra_http_headers={"Authorization": f"Bearer {api.tokens['events']}"}
            )
            forbidden = writer.new_page().goto(url)
            assert forbidden is not None
            assert forbidden.status == 403
            assert "read" in forbidden.json()["detail"]
            writer.close()
    finally:
        api.stop()
