"""No secret or event in any log line, from us or from dramatiq, and one record is one
line even when several processes share stderr."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from dramatiq import Message
from dramatiq.broker import MessageProxy

from orchestrator.logging import configure_logging
from orchestrator.validation import parse_event
from schemas.redaction import redact

from .conftest import make_event

JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"


def test_dramatiq_names_a_message_by_actor_and_id(capsys: pytest.CaptureFixture[str]) -> None:
    """dramatiq's "Failed to process message handle_event({...})" shows neither the event
    nor the planted secrets, in the message or the traceback."""
    configure_logging("INFO", "json")
    event = {"session_id": "s-1", "request": {"args": {"id_token_hint": JWT}}}
    message = MessageProxy(
        Message(
            queue_name="logout.events",
            actor_name="handle_event",
            args=(event,),
            kwargs={"password": "hunter2"},
            options={},
        )
    )
    try:
        raise ValueError(f"bad input password=hunter2 {JWT}")
    except ValueError:
        logging.getLogger("dramatiq.worker.WorkerThread").error(
            "Failed to process message %s with unhandled exception.", message, exc_info=True
        )
    line = capsys.readouterr().err.strip()
    record = json.loads(line)
    assert record["event"] == (
        f"Failed to process message handle_event(message_id={message.message_id}) "
        "with unhandled exception."
    )
    for secret in ("hunter2", JWT, "s-1"):
        assert secret not in line, secret


def test_secrets_in_text_are_masked() -> None:
    """JWTs and secret-named pairs are masked inside text; other text is left alone."""
    text = f"GET /logout?id_token_hint={JWT}&state=abc password: hunter2 user=alice"
    assert redact(text) == (
        "GET /logout?id_token_hint=[redacted]&state=abc password: [redacted] user=alice"
    )
    assert redact({"args": {"Password": "x", "next": f"/a?t={JWT}"}}) == {
        "args": {"Password": "[redacted]", "next": "/a?t=[redacted]"}
    }


def test_request_args_are_stored_redacted() -> None:
    """An event's request arguments are redacted on validation, so what is stored, audited
    and re-published never holds them."""
    event = parse_event(
        make_event(
            "logout.user",
            session_id="s-1",
            request={"args": {"id_token_hint": JWT, "password": "hunter2", "lang": "en"}},
        ),
        "event",
    )
    assert event.request is not None
    assert event.request.args == {
        "id_token_hint": "[redacted]",
        "password": "[redacted]",
        "lang": "en",
    }


_WRITER = """
import structlog, sys
from orchestrator.logging import configure_logging
configure_logging("INFO", "json")
log = structlog.get_logger("t")
for i in range(300):
    log.info("record", writer=sys.argv[1], i=i, filler="x" * 3000)
"""


def test_records_of_processes_sharing_stderr_never_mix(tmp_path: Path) -> None:
    """Four processes log 300 records of 3 KB each to one stderr: every line is one whole
    JSON record, and none is lost."""
    out = tmp_path / "stderr.log"
    with out.open("wb") as stderr:
        writers = [
            subprocess.Popen([sys.executable, "-c", _WRITER, str(n)], stderr=stderr)
            for n in range(4)
        ]
        for writer in writers:
            assert writer.wait(timeout=120) == 0
    lines = out.read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 1200
    assert {(r["writer"], r["i"]) for r in records} == {
        (str(n), i) for n in range(4) for i in range(300)
    }
