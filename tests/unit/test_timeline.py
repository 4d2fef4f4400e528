"""The timeline of one logout (``orchestrator.timeline``): where each record goes, retries as
attempts, and a trail with records missing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from orchestrator.timeline import DeliveryRow, build_timeline, timeline_json
from schemas.audit import AuditRecord, AuditType

EVENT = "6a1f0c2e-0000-4000-8000-000000000001"
T0 = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


def _record(
    kind: AuditType,
    ms: float,
    outcome: str,
    *,
    provider: str | None = None,
    **detail: Any,
) -> AuditRecord:
    return AuditRecord(
        id=str(uuid.uuid4()),
        at=T0 + timedelta(milliseconds=ms),
        type=kind,
        event_id=EVENT,
        user_id="alice",
        session_id="s-1",
        provider=provider,
        outcome=outcome,
        detail=detail,
    )


def _full_trail() -> list[AuditRecord]:
    return [
        _record(AuditType.EVENT_RECEIVED, 0, "accepted", type="logout.session", initiator="user"),
        _record(AuditType.SESSION_ENDED, 3, "ended", end_reason="logout", initiator="user"),
        _record(AuditType.PLAN_BUILT, 5, "built", plan_id="p-1", stages=[]),
        _record(
            AuditType.DELIVERY_SUCCEEDED,
            12,
            "succeeded",
            provider="rp-ok",
            delivery_id="d-ok",
            attempt=1,
            status_code=200,
            latency_ms=4.25,
        ),
        _record(
            AuditType.DELIVERY_RETRYING,
            14,
            "retrying",
            provider="rp-flaky",
            delivery_id="d-flaky",
            attempt=1,
            status_code=503,
            error="HTTP 503",
            error_class="transient",
            latency_ms=6.5,
            next_attempt_at=(T0 + timedelta(milliseconds=214)).isoformat(),
        ),
        _record(AuditType.LOGOUT_COMPLETED, 15, "retrying", sessions_ended=1),
        _record(
            AuditType.DELIVERY_SUCCEEDED,
            230,
            "succeeded",
            provider="rp-flaky",
            delivery_id="d-flaky",
            attempt=2,
            status_code=200,
            latency_ms=3.0,
        ),
        _record(AuditType.LOGOUT_SETTLED, 231, "success", deliveries={"succeeded": 2}),
    ]


ROWS = [
    DeliveryRow("d-ok", "rp-ok", "succeeded", 1, T0 + timedelta(milliseconds=6)),
    DeliveryRow("d-flaky", "rp-flaky", "succeeded", 2, T0 + timedelta(milliseconds=6)),
]


def test_each_record_type_is_placed_in_order() -> None:
    """Received is the start, steps in time order, delivery records are attempts, settled
    ends it."""
    timeline = build_timeline(EVENT, _full_trail(), ROWS)
    assert timeline is not None
    assert timeline.started_at == T0
    assert timeline.received
    assert [(s.name, s.offset_ms) for s in timeline.steps] == [
        ("received", 0.0),
        ("session ended", 3.0),
        ("plan built", 5.0),
        ("completed", 15.0),
        ("settled", 231.0),
    ]
    assert timeline.steps[1].detail == {"end_reason": "logout", "initiator": "user"}
    assert timeline.settled
    assert timeline.settled_at == T0 + timedelta(milliseconds=231)
    assert timeline.settled_after_ms == 231.0
    assert timeline.outcome == "success"
    assert [line.provider for line in timeline.deliveries] == ["rp-ok", "rp-flaky"]
    ok = timeline.deliveries[0]
    assert [(a.number, a.outcome, a.status_code, a.latency_ms) for a in ok.attempts] == [
        (1, "succeeded", 200, 4.25)
    ]
    assert ok.channel == "back"


def test_a_retry_is_one_attempt_each() -> None:
    """A retrying then succeeded delivery has two attempts: the first with its error, its
    class and when the next was due; its status and count come from the row."""
    timeline = build_timeline(EVENT, _full_trail(), ROWS)
    assert timeline is not None
    flaky = timeline.deliveries[1]
    first, second = flaky.attempts
    assert (first.number, first.outcome, first.status_code) == (1, "retrying", 503)
    assert (first.error, first.error_class, first.latency_ms) == ("HTTP 503", "transient", 6.5)
    assert first.retry_in_ms == 200.0
    assert first.offset_ms == 14.0
    assert (second.number, second.outcome, second.offset_ms) == (2, "succeeded", 230.0)
    assert second.error is None
    assert second.retry_in_ms is None
    assert (flaky.status, flaky.attempts_made, flaky.outcome) == ("succeeded", 2, "succeeded")


def test_missing_records_are_tolerated() -> None:
    """Without event.received the start is the first record; a row without records shows no
    attempts; records without a row keep their provider; no settled record: still open."""
    trail = [r for r in _full_trail() if r.type is not AuditType.EVENT_RECEIVED]
    trail = [r for r in trail if r.type is not AuditType.LOGOUT_SETTLED]
    trail = [r for r in trail if r.provider != "rp-ok"]
    rows = [ROWS[0], DeliveryRow("d-new", "rp-new", "pending", 0, T0 + timedelta(seconds=1))]
    timeline = build_timeline(EVENT, trail, rows)
    assert timeline is not None
    assert not timeline.received
    assert timeline.started_at == T0 + timedelta(milliseconds=3)
    assert [s.name for s in timeline.steps] == ["session ended", "plan built", "completed"]
    assert not timeline.settled
    assert timeline.outcome == "retrying"  # logout.completed's word, the last there is
    lines = {line.delivery_id: line for line in timeline.deliveries}
    assert lines["d-ok"].attempts == ()
    assert lines["d-ok"].attempts_made == 1
    assert lines["d-ok"].unrecorded == 1
    assert lines["d-flaky"].attempt_count == 2  # no row: the attempts recorded
    assert timeline.settled_after_ms is None
    assert lines["d-new"].outcome == "pending"
    assert lines["d-flaky"].provider == "rp-flaky"
    assert lines["d-flaky"].status is None
    assert lines["d-flaky"].outcome == "succeeded"


def test_nothing_known_is_no_timeline() -> None:
    assert build_timeline(EVENT, [], []) is None


def test_an_old_failed_record_gets_its_error_class_from_its_text() -> None:
    """Records written before error_class was recorded: gave up after N attempts is a
    transient failure; any other failure is permanent."""
    gave_up = _record(
        AuditType.DELIVERY_FAILED,
        9,
        "failed",
        provider="rp-a",
        delivery_id="d-a",
        attempt=3,
        error="no answer within 1 s; gave up after 3 attempts",
    )
    refused = _record(
        AuditType.DELIVERY_FAILED, 9, "failed", provider="rp-b", delivery_id="d-b", error="HTTP 400"
    )
    timeline = build_timeline(EVENT, [gave_up, refused])
    assert timeline is not None
    classes = {line.provider: line.attempts[0].error_class for line in timeline.deliveries}
    assert classes == {"rp-a": "transient", "rp-b": "permanent"}
    assert timeline.deliveries[0].attempts[0].number == 3  # the record's own attempt number


def test_frontchannel_reports_are_attempts_of_their_delivery() -> None:
    """What the browser reported is the attempt of the front-channel delivery (by
    delivery_id, else by plan entry), with the page's elapsed time as its latency."""
    loaded = _record(
        AuditType.FRONTCHANNEL_LOADED,
        40,
        "loaded",
        provider="rp-front",
        delivery_id=None,
        entry_id="e-1",
        elapsed_ms=120,
    )
    timeline = build_timeline(EVENT, [*_full_trail(), loaded], ROWS)
    assert timeline is not None
    [front] = [line for line in timeline.deliveries if line.channel == "front"]
    assert front.delivery_id == "frontchannel:e-1"
    assert [(a.outcome, a.latency_ms, a.number) for a in front.attempts] == [("loaded", 120, 1)]


def test_json_has_every_field_and_the_derived_ones() -> None:
    timeline = build_timeline(EVENT, _full_trail(), ROWS)
    assert timeline is not None
    data = timeline_json(timeline)
    assert data["event_id"] == EVENT
    assert data["started_at"] == "2026-03-01T09:30:00Z"
    assert data["settled"] is True
    assert data["settled_after_ms"] == 231.0
    assert [d["unrecorded"] for d in data["deliveries"]] == [0, 0]
    assert [d["outcome"] for d in data["deliveries"]] == ["succeeded", "succeeded"]
    attempt = data["deliveries"][1]["attempts"][0]
    assert attempt["latency_ms"] == 6.5
    assert attempt["status_code"] == 503
    assert [s["name"] for s in data["steps"]][-1] == "settled"


def test_the_terminal_drawing_shows_every_part_as_plain_text() -> None:
    """audit show's tree: header with the start, each step and attempt with its relative
    time and words; a provider name holding markup is printed as it is."""
    from rich.console import Console

    from workers.timeline import draw_timeline

    trail = [
        r.model_copy(update={"provider": "rp-[bold]x"}) if r.provider == "rp-flaky" else r
        for r in _full_trail()
    ]
    timeline = build_timeline(EVENT, trail, [DeliveryRow("d-ok", "rp-ok", "succeeded", 3)])
    assert timeline is not None
    out = Console(width=200, record=True, color_system=None)
    out.print(draw_timeline(timeline))
    text = out.export_text()
    assert "started 2026-03-01 09:30:00.000 UTC  settled after 231 ms: success" in text
    assert "rp-[bold]x  back-channel  succeeded  after 2 attempts" in text
    assert "rp-ok  back-channel  succeeded  after 3 attempts (2 without a record)" in text
    assert (
        "+14 ms    attempt 1         retrying   HTTP 503; took 6.5 ms; transient: HTTP 503; "
        "next try 200 ms later" in text
    )
    lines = text.splitlines()[1:]  # under the header
    order = [
        next(i for i, line in enumerate(lines) if word in line)
        for word in ("received", "plan built", "deliveries: 2", "completed", "settled")
    ]
    assert order == sorted(order), text


def test_the_page_escapes_everything_and_runs_no_script() -> None:
    """The HTML page: every value escaped, no script element, the style under the CSP's
    nonce, the deliveries between the steps where the terminal puts them."""
    from api.pages import render_timeline

    hostile = "<script>alert(1)</script>"
    trail = [
        r.model_copy(update={"provider": hostile}) if r.provider == "rp-flaky" else r
        for r in _full_trail()
    ]
    timeline = build_timeline(EVENT, trail, [])
    assert timeline is not None
    page = render_timeline(timeline)
    assert "<script" not in page.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.html
    assert f'<style nonce="{page.nonce}">' in page.html
    assert page.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert f"style-src 'nonce-{page.nonce}'" in page.headers["Content-Security-Policy"]
    assert page.headers["Cache-Control"] == "no-store"
    html = page.html
    positions = [html.index(f'data-type="{kind}"') for kind in ("plan.built", "logout.completed")]
    assert positions[0] < html.index('id="deliveries"') < positions[1]
    assert html.count('class="attempt"') == 3
    assert "transient: HTTP 503" in html
    assert render_timeline(timeline).nonce != page.nonce  # a fresh one each time


def test_a_step_written_with_the_first_attempt_comes_after_the_deliveries() -> None:
    """Records of one transaction share their time: logout.completed, written with the
    first attempts, is placed after the deliveries; steps before them stay before."""
    trail = [
        r.model_copy(update={"at": T0 + timedelta(milliseconds=12)})
        if r.type is AuditType.LOGOUT_COMPLETED
        else r
        for r in _full_trail()
    ]
    timeline = build_timeline(EVENT, trail, ROWS)
    assert timeline is not None
    names = [step.name for step in timeline.steps]
    assert names[: timeline.deliveries_after] == ["received", "session ended", "plan built"]
    assert build_timeline(EVENT, trail[:3], []) is not None
    without_attempts = build_timeline(EVENT, trail[:3], ROWS)
    assert without_attempts is not None
    assert without_attempts.deliveries_after == 3  # no attempt yet: the deliveries come last


def test_attempts_without_a_provider_are_kept() -> None:
    """Records naming no provider and no row (a trail cut down by hand): still delivered in
    order, drawn as an unknown provider."""
    from rich.console import Console

    from workers.timeline import draw_timeline

    records = [
        _record(AuditType.DELIVERY_SUCCEEDED, 12, "succeeded", delivery_id=f"d-{n}", attempt=1)
        for n in (1, 2)
    ]
    named = _record(
        AuditType.DELIVERY_SUCCEEDED, 12, "succeeded", provider="rp-a", delivery_id="d-3"
    )
    timeline = build_timeline(EVENT, [*records, named])
    assert timeline is not None
    assert [line.provider for line in timeline.deliveries] == [None, None, "rp-a"]
    out = Console(width=200, record=True, color_system=None)
    out.print(draw_timeline(timeline))
    assert out.export_text().count("(provider unknown)  back-channel  succeeded") == 2


def test_columns_never_run_together() -> None:
    """An operator's retry minutes later: '+3 min 6 s' (10 characters) and a step without a
    short name widen their columns for that drawing; an ordinary drawing keeps its widths."""
    import re

    from rich.console import Console

    from workers.timeline import draw_timeline

    later = 186_000  # +3 min 6 s
    trail = [
        *_full_trail(),
        _record(AuditType.DELIVERY_RETRY_REQUESTED, later, "requested", actor="ops"),
        _record(AuditType.SESSION_NOT_FOUND, later + 1, "not_found", reason="gone"),
        _record(
            AuditType.DELIVERY_SUCCEEDED,
            later + 600_000,  # +13 min 6 s
            "succeeded",
            provider="rp-ok",
            delivery_id="d-ok",
            attempt=2,
            status_code=200,
        ),
    ]
    timeline = build_timeline(EVENT, trail, [])
    assert timeline is not None
    assert [step.name for step in timeline.steps][-2:] == ["retry requested", "session not found"]
    out = Console(width=300, record=True, color_system=None)
    out.print(draw_timeline(timeline))
    text = out.export_text()
    assert re.search(r"\+3 min 6 s +retry requested +requested", text), text
    assert re.search(
        r"\+3 min 6 s +session not found +not_found +session s-1 of alice; reason: gone", text
    )
    assert re.search(r"\+13 min 6 s +attempt 2 +succeeded +HTTP 200", text), text
    steps = [line for line in text.splitlines() if line.startswith(("├── +", "└── +"))]
    for column in ("received", "accepted"):  # each column starts at one place on every step
        assert len({line.index(column) for line in steps if column in line}) == 1
    starts = {line.index("retry requested") for line in steps if "retry requested" in line}
    assert starts == {line.index("session not found") for line in steps if "not found" in line}
    assert starts == {line.index("received") for line in steps if "received" in line}
    ordinary = Console(width=300, record=True, color_system=None)
    ordinary.print(draw_timeline(build_timeline(EVENT, _full_trail(), ROWS)))  # type: ignore[arg-type]
    assert "+14 ms    attempt 1         retrying   HTTP 503" in ordinary.export_text()
