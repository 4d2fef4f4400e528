"""``logout-orchestrator audit show EVENT_ID``: one logout drawn as a timeline in the terminal
(rich), or with ``--json`` the same timeline as one JSON document.

The timeline is :mod:`orchestrator.timeline`'s; this module only draws it. Values from the
trail (provider names, errors) are shown as text, never read as markup.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

import click
from rich.text import Text
from rich.tree import Tree

from orchestrator.audit_query import resolve_event_id
from orchestrator.errors import InputError
from orchestrator.settings import Settings
from orchestrator.store.reading import reading_engine
from orchestrator.timeline import DeliveryLine, Timeline, read_timeline, timeline_json
from orchestrator.timeline_text import attempt_summary, duration_text, offset_text, step_summary
from workers.cli.base import console

__all__ = ["draw_timeline", "show_timeline"]

#: The colour of each outcome; anything else is shown plain.
_STYLES = {
    "accepted": "green",
    "succeeded": "green",
    "success": "green",
    "loaded": "green",
    "completed": "green",
    "ended": "green",
    "built": "green",
    "retrying": "yellow",
    "pending": "yellow",
    "skipped": "dim",
    "ignored": "dim",
    "failed": "red",
    "partial": "red",
    "rejected": "red",
    "timed_out": "red",
}
#: The narrowest each column is (``+233 ms``, ``session not found``, ``succeeded``); a
#: drawing with longer values (``+3 min 6 s``, ``duplicate received``) widens it.
_OFFSET_WIDTH = 10
_NAME_WIDTH = 18
_OUTCOME_WIDTH = 10


@dataclass(frozen=True, slots=True)
class _Columns:
    """How wide the offset, name and outcome columns of one drawing are: wide enough for
    its longest value and a gap, so no two columns ever run together."""

    offset: int = _OFFSET_WIDTH
    name: int = _NAME_WIDTH
    outcome: int = _OUTCOME_WIDTH

    @classmethod
    def of(cls, timeline: Timeline) -> _Columns:
        attempts = [a for line in timeline.deliveries for a in line.attempts]
        offsets = [*(s.offset_ms for s in timeline.steps), *(a.offset_ms for a in attempts)]
        names = [*(s.name for s in timeline.steps), *(f"attempt {a.number}" for a in attempts)]
        outcomes = [*(s.outcome for s in timeline.steps), *(a.outcome for a in attempts)]
        return cls(
            max([_OFFSET_WIDTH, *(len(offset_text(ms)) + 2 for ms in offsets)]),
            max([_NAME_WIDTH, *(len(name) + 1 for name in names)]),
            max([_OUTCOME_WIDTH, *(len(outcome) + 1 for outcome in outcomes)]),
        )


def _when(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def _line(columns: _Columns, offset_ms: float, name: str, outcome: str, summary: str) -> Text:
    text = Text(offset_text(offset_ms).ljust(columns.offset), style="cyan")
    text.append(name.ljust(columns.name), style="bold")
    text.append(outcome.ljust(columns.outcome), style=_STYLES.get(outcome, ""))
    if summary:
        text.append(" " + summary)
    return text


def _header(timeline: Timeline) -> Text:
    text = Text("logout ", style="bold")
    text.append(timeline.event_id, style="bold")
    text.append(f"  started {_when(timeline.started_at)}")
    if not timeline.received:
        text.append("  (no event.received record: times count from the first record)", "dim")
    if timeline.settled_after_ms is not None:
        text.append(f"  settled after {duration_text(timeline.settled_after_ms)}: ")
    else:
        text.append("  not settled: ")
    outcome = timeline.outcome or "open"
    text.append(outcome, style=_STYLES.get(outcome, "yellow"))
    return text


def _delivery(tree: Tree, line: DeliveryLine, columns: _Columns) -> None:
    label = Text(line.provider or "(provider unknown)", style="bold")
    label.append(f"  {line.channel}-channel  ")
    label.append(line.outcome, style=_STYLES.get(line.outcome, ""))
    made = line.attempt_count
    label.append(f"  after {made} attempt{'s' if made != 1 else ''}")
    if line.unrecorded:
        label.append(f" ({line.unrecorded} without a record)", style="dim")
    label.append(f"  delivery {line.delivery_id}", style="dim")
    node = tree.add(label)
    for attempt in line.attempts:
        name = f"attempt {attempt.number}"
        summary = attempt_summary(attempt)
        node.add(_line(columns, attempt.offset_ms, name, attempt.outcome, summary))


def draw_timeline(timeline: Timeline) -> Tree:
    """The timeline as a rich tree: the steps in time order, the deliveries (each with its
    attempts) where the first attempt was made."""
    tree = Tree(_header(timeline), guide_style="dim")
    columns = _Columns.of(timeline)
    for index, step in enumerate(timeline.steps):
        if index == timeline.deliveries_after and timeline.deliveries:
            _deliveries(tree, timeline, columns)
        tree.add(_line(columns, step.offset_ms, step.name, step.outcome, step_summary(step)))
    if timeline.deliveries_after == len(timeline.steps) and timeline.deliveries:
        _deliveries(tree, timeline, columns)
    return tree


def _deliveries(tree: Tree, timeline: Timeline, columns: _Columns) -> None:
    branch = tree.add(Text(f"deliveries: {len(timeline.deliveries)}", style="bold"))
    for line in timeline.deliveries:
        _delivery(branch, line, columns)


def show_timeline(settings: Settings, event: str, *, as_json: bool) -> None:
    """Print the timeline of the event ``event`` names (its id or a unique start of one);
    an unknown or ambiguous id is a :class:`click.BadParameter` (exit 2)."""
    engine = reading_engine(settings.effective_database_url, settings.origin("database_url"))
    try:
        with engine.connect() as db:
            try:
                event_id = resolve_event_id(db, event)
            except InputError as exc:
                message = "; ".join(problem.message for problem in exc.problems)
                raise click.BadParameter(message, param_hint="'EVENT_ID'") from None
            timeline = read_timeline(db, event_id)
    finally:
        engine.dispose()
    if timeline is None:  # its records were there a moment ago: purged in between
        raise click.BadParameter(f"no record of {event_id} is left", param_hint="'EVENT_ID'")
    if as_json:
        click.echo(json.dumps(timeline_json(timeline), indent=2))
    else:
        console().print(draw_timeline(timeline))
