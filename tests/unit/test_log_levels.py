"""Audit log lines by outcome: a WARNING filter shows every failed or retrying logout."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog

from orchestrator.audit import emit, log_level
from orchestrator.logging import configure_logging
from orchestrator.settings import Settings
from schemas import AuditRecord, AuditType
from workers import process


@pytest.fixture(autouse=True)
def _info_logging() -> None:
    """Lines at INFO and above pass, whatever level an earlier test configured."""
    configure_logging("INFO", "json")


def _record(kind: AuditType, outcome: str) -> AuditRecord:
    return AuditRecord(
        id=f"{kind.value}-{outcome}", at=datetime.now(UTC), type=kind, outcome=outcome
    )


@pytest.mark.parametrize(
    ("kind", "outcome", "level"),
    [
        (AuditType.DELIVERY_SUCCEEDED, "succeeded", "info"),
        (AuditType.DELIVERY_SKIPPED, "skipped", "info"),
        (AuditType.DELIVERY_RETRYING, "retrying", "warning"),
        (AuditType.DELIVERY_FAILED, "failed", "warning"),
        (AuditType.FRONTCHANNEL_TIMED_OUT, "timed_out", "warning"),
        (AuditType.LOGOUT_COMPLETED, "success", "info"),
        (AuditType.LOGOUT_COMPLETED, "retrying", "info"),
        (AuditType.LOGOUT_COMPLETED, "partial", "error"),
        (AuditType.LOGOUT_SETTLED, "success", "info"),
        (AuditType.LOGOUT_SETTLED, "partial", "error"),
        (AuditType.SESSION_ENDED, "ended", "info"),
    ],
)
def test_audit_line_level_follows_the_outcome(kind: AuditType, outcome: str, level: str) -> None:
    """Failed or retrying deliveries warn; a logout with failed deliveries is an error."""
    with structlog.testing.capture_logs() as logs:
        emit([_record(kind, outcome)])
    (line,) = logs
    assert (line["event"], line["type"], line["log_level"]) == ("audit", kind.value, level)
    assert log_level(_record(kind, outcome)) == logging.getLevelName(level.upper())


def test_a_warning_filter_keeps_every_failure(capsys: pytest.CaptureFixture[str]) -> None:
    """With log_level WARNING, failures and partial logouts are logged, successes are not."""
    configure_logging("WARNING", "json")
    emit(
        [
            _record(AuditType.DELIVERY_SUCCEEDED, "succeeded"),
            _record(AuditType.DELIVERY_FAILED, "failed"),
            _record(AuditType.LOGOUT_SETTLED, "partial"),
            _record(AuditType.LOGOUT_SETTLED, "success"),
        ]
    )
    lines = [json.loads(x) for x in capsys.readouterr().err.splitlines()]
    assert [(x["type"], x["level"]) for x in lines] == [
        ("delivery.failed", "warning"),
        ("logout.settled", "error"),
    ]


def test_a_filtered_record_is_never_serialised(monkeypatch: pytest.MonkeyPatch) -> None:
    """Below the configured level a record costs no serialisation: only the lines written
    are dumped (a loaded worker emits thousands of records a second)."""
    configure_logging("WARNING", "json")
    dumped: list[str] = []
    dump = AuditRecord.model_dump

    def counting_dump(self: AuditRecord, **options: Any) -> dict[str, Any]:
        dumped.append(self.type.value)
        return dump(self, **options)

    monkeypatch.setattr(AuditRecord, "model_dump", counting_dump)
    emit(
        [
            *(_record(AuditType.DELIVERY_SUCCEEDED, "succeeded") for _ in range(50)),
            _record(AuditType.DELIVERY_FAILED, "failed"),
        ]
    )
    assert dumped == ["delivery.failed"]


def test_worker_start_logs_the_duration_readings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """serve() logs every duration setting's reading once, before the workers start."""

    class _Runtime:
        @classmethod
        def start(cls, _settings: Settings, **_options: Any) -> _Runtime:
            return cls()

        def close(self) -> None:
            pass

    started: list[Settings] = []

    def _run_worker(settings: Settings, **_options: Any) -> int:
        started.append(settings)
        return 0

    monkeypatch.setattr(process, "Runtime", _Runtime)
    monkeypatch.setattr(process, "run_worker", _run_worker)
    settings = Settings.load(
        None,
        data_dir=tmp_path,
        broker_url="redis://127.0.0.1:1/0",
        worker_processes=1,
        session_absolute_lifetime="30M",
    )
    with structlog.testing.capture_logs() as logs:
        assert process.serve(settings) == 0
    (line,) = [log for log in logs if log["event"] == "duration settings"]
    assert line["durations"]["session_absolute_lifetime"] == "900 days"
    assert line["durations"]["delivery_timeout"] == "5 seconds"
    assert len(started) == 1
