"""Progress of long commands: a bar on a terminal only, the summary line always."""

from __future__ import annotations

import io
import json
from pathlib import Path

from click.testing import CliRunner

from tests.unit.conftest import make_event
from workers.cli import main
from workers.progress import ProgressBar, Reported

BAR = "━"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        "LOGOUT_DATA_DIR": str(tmp_path),
        "LOGOUT_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
        "LOGOUT_BROKER_URL": "memory://",
        "LOGOUT_PROTOCOLS": "",
        "LOGOUT_LOG_LEVEL": "WARNING",
    }


def test_bar_is_drawn_on_a_terminal_only() -> None:
    """A terminal gets a bar per stage; any other stream gets nothing at all."""
    terminal, redirected = _Terminal(), io.StringIO()
    for stream in (terminal, redirected):
        with ProgressBar(stream) as progress:
            for done in range(0, 3001, 1000):
                progress("validating", done, 3000)
            progress("writing", 3000, 3000)
    assert BAR in terminal.getvalue()
    assert "validating" in terminal.getvalue()
    assert redirected.getvalue() == ""


def test_reported_sequence_tells_how_far_it_was_read() -> None:
    """Iterating a Reported sequence reports from 0 to its length; indexing is untouched."""
    calls: list[tuple[str, int, int]] = []
    items = Reported(list(range(1200)), lambda *call: calls.append(call), "publishing")
    assert (len(items), items[3], list(items[:2])) == (1200, 3, [0, 1])
    assert sum(1 for _ in items) == 1200
    assert calls == [
        ("publishing", 0, 1200),
        ("publishing", 500, 1200),
        ("publishing", 1000, 1200),
        ("publishing", 1200, 1200),
    ]


def test_sessions_import_redirected_prints_only_the_summary(tmp_path: Path) -> None:
    """Output not a terminal: no bar characters, one summary line with the counts."""
    lines = [
        json.dumps({"kind": "session", "session_id": f"s-{n}", "user_id": "u"}) for n in range(2500)
    ]
    (tmp_path / "s.jsonl").write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(
        main, ["sessions", "import", str(tmp_path / "s.jsonl")], env=_env(tmp_path)
    )
    assert result.exit_code == 0, result.output
    assert BAR not in result.output
    [summary] = result.output.splitlines()
    assert summary.startswith(
        "sessions: 2,500 created, 0 updated; provider sessions: 0 created, 0 updated; in "
    )


def test_publish_redirected_lists_events_and_the_summary(tmp_path: Path) -> None:
    """publish, redirected: each event, then the summary; no bar."""
    events = [make_event("logout.user", session_id=f"s-{n}") for n in range(3)]
    text = "\n".join(json.dumps(e) for e in events)
    result = CliRunner().invoke(main, ["publish", "-"], env=_env(tmp_path), input=text)
    assert result.exit_code == 0, result.output
    assert BAR not in result.output
    listed = result.output.splitlines()
    assert listed[:3] == [f"published logout.user {e['event_id']}" for e in events]
    assert listed[3].startswith("published 3 events in ")
