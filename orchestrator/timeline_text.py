"""The words of a logout's timeline, one line per step or attempt: what the terminal
(``audit show``) and the page (``GET /v1/logouts/{event_id}/timeline``) both print, defined
once so the two drawings never say different things."""

from __future__ import annotations

from typing import Any

from orchestrator.timeline import Attempt, Step

__all__ = ["attempt_summary", "duration_text", "offset_text", "step_summary"]


def duration_text(ms: float) -> str:
    """``850 µs``, ``12 ms``, ``4.3 ms``, ``1.25 s``, ``2 min 5 s``."""
    if ms < 1:
        return f"{ms * 1000:.0f} µs"
    if ms < 10:
        return f"{ms:.1f} ms"
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.2f} s"
    minutes, seconds = divmod(round(ms / 1000), 60)
    return f"{minutes} min {seconds} s"


def offset_text(ms: float) -> str:
    """A time relative to the start: ``+0 ms``, ``+12 ms``, ``+1.25 s`` (``-`` before it)."""
    return ("-" if ms < 0 else "+") + duration_text(abs(ms)) if ms else "+0 ms"


def _counts(deliveries: Any) -> str:
    if not isinstance(deliveries, dict):
        return ""
    return ", ".join(f"{count} {status}" for status, count in deliveries.items() if count)


def step_summary(step: Step) -> str:
    """One line on what a step says: who, which session, why, how many."""
    detail = step.detail
    parts: list[str] = []
    if "type" in detail:
        parts.append(str(detail["type"]))
    if step.type.startswith("session.") and step.session_id:
        parts.append(f"session {step.session_id}" + (f" of {step.user_id}" if step.user_id else ""))
    if "initiator" in detail:
        actor = detail.get("actor")
        parts.append(f"by {detail['initiator']}" + (f" ({actor})" if actor else ""))
    for name in ("end_reason", "reason", "first_status"):
        if detail.get(name):
            parts.append(f"{name.replace('_', ' ')}: {detail[name]}")
    if detail.get("plan_id"):
        stages = detail.get("stages")
        count = f", {len(stages)} stage(s)" if isinstance(stages, list) else ""
        parts.append(f"plan {detail['plan_id']}{count}")
    if "sessions_ended" in detail:
        parts.append(f"{detail['sessions_ended']} session(s) ended")
    counted = _counts(detail.get("deliveries"))
    if counted:
        parts.append(f"deliveries: {counted}")
    return "; ".join(parts)


def attempt_summary(attempt: Attempt) -> str:
    """One line on an attempt: its answer, its latency, its error and when the next was due."""
    parts: list[str] = []
    if attempt.status_code is not None:
        parts.append(f"HTTP {attempt.status_code}")
    if attempt.latency_ms is not None:
        parts.append(f"took {duration_text(attempt.latency_ms)}")
    if attempt.error:
        kind = f"{attempt.error_class}: " if attempt.error_class else ""
        parts.append(f"{kind}{attempt.error}")
    if attempt.retry_in_ms is not None:
        parts.append(f"next try {duration_text(attempt.retry_in_ms)} later")
    return "; ".join(parts)
