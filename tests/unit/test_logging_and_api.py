"""Secrets never reach the logs, and the public API is what we say it is."""

from __future__ import annotations

import dataclasses
import json

import pytest
import structlog

import api
import orchestrator
import orchestrator.logout
import orchestrator.operations
import orchestrator.ssf_intake
import orchestrator.store
import protocols
import protocols.ssf.receiving
import protocols.ssf.signals
import schemas
import workers
from orchestrator.audit import AuditEntry, emit, write_audit
from orchestrator.logging import configure_logging, redact_secrets
from orchestrator.runtime import Runtime
from schemas import AuditType


def test_redaction_processor_scrubs_nested_secrets() -> None:
    """Token, SAML and key fields are replaced at any depth."""
    event = {
        "event": "sent",
        "logout_token": "eyJ.secret.sig",
        "detail": {"SAMLRequest": "PHNhbWw+", "ok": 1, "items": [{"private_key": "k"}]},
    }
    scrubbed = redact_secrets(None, "info", event)
    assert scrubbed["logout_token"] == "[redacted]"
    assert scrubbed["detail"]["SAMLRequest"] == "[redacted]"
    assert scrubbed["detail"]["items"][0]["private_key"] == "[redacted]"
    assert scrubbed["detail"]["ok"] == 1


def test_json_log_lines_are_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    """A configured logger writes one JSON line per event, without the secret."""
    configure_logging("INFO", "json")
    structlog.get_logger("t").info("delivery", logout_token="eyJ.secret.sig", provider="wiki")
    line = capsys.readouterr().err.strip().splitlines()[-1]
    record = json.loads(line)
    assert record["provider"] == "wiki"
    assert record["logout_token"] == "[redacted]"
    assert "eyJ.secret.sig" not in line


def test_every_audit_record_is_logged_once(
    runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    """Writing an audit record gives one JSON log line; writing it again gives none."""
    configure_logging("INFO", "json")
    entry = AuditEntry(key="k-1", type=AuditType.EVENT_RECEIVED, outcome="accepted", event_id="e")
    for _ in range(2):
        with runtime.database.begin() as db:
            records = write_audit(db, [entry])
        emit(records)
    lines = [json.loads(x) for x in capsys.readouterr().err.splitlines() if '"audit"' in x]
    assert len(lines) == 1
    assert lines[0]["type"] == "event.received"
    assert lines[0]["event_id"] == "e"


@pytest.mark.parametrize(
    ("module", "names"),
    [
        (
            orchestrator,
            {
                "publish",
                "Publisher",
                "Settings",
                "SessionRegistry",
                "LogoutError",
                "OutboxRelay",
                "BrokerSender",
            },
        ),
        (
            orchestrator.logout,
            {"Attempts", "HandleResult", "LogoutEngine", "Tally", "end_reason"},
        ),
        (orchestrator.store, {"Database", "make_database", "make_engine", "upgrade"}),
        (
            orchestrator.operations,
            {"list_deliveries", "request_retries", "replay_rejected", "remove_provider"},
        ),
        (
            protocols,
            {"ProtocolHandler", "BackchannelRequest", "handler_classes", "Channel", "KeyDirectory"},
        ),
        (protocols.ssf.receiving, {"SET_MEDIA_TYPE", "SetRefusedError", "read_header", "verify"}),
        (protocols.ssf.signals, {"SESSION_REVOKED", "Signal", "read_signals"}),
        (orchestrator.ssf_intake, {"ReceivedSet", "SetIntake", "event_id_of"}),
        (schemas, {"Event", "AuditRecord", "AuditType", "LogoutUser", "event_adapter"}),
        (workers, {"build_broker", "declare_actors", "embedded", "serve"}),
        (api, {"ApiProblem", "create_app", "openapi_document", "serve"}),
    ],
)
def test_public_api_is_exported_and_sorted(module: object, names: set[str]) -> None:
    """Each package lists a sorted __all__ that exists and holds its key names."""
    exported = list(module.__all__)  # type: ignore[attr-defined]
    # isort style, as ruff keeps it: CONSTANTS, then Classes, then functions.
    assert exported == sorted(exported, key=lambda n: (not n.isupper(), not n[0].isupper(), n))
    assert names <= set(exported)
    for name in exported:
        assert hasattr(module, name), name


def test_one_exception_root() -> None:
    """Every error type derives from LogoutError; retries follow from the two delivery types."""
    errors = [
        orchestrator.ConfigurationError,
        orchestrator.HandlerLoadError,
        orchestrator.InputError,
        orchestrator.PermanentDeliveryError,
        orchestrator.TransientDeliveryError,
        protocols.ssf.receiving.SetRefusedError,
    ]
    assert all(issubclass(e, orchestrator.LogoutError) for e in errors)
    assert not issubclass(orchestrator.TransientDeliveryError, orchestrator.PermanentDeliveryError)


def test_the_database_handle_is_not_called_sessions() -> None:
    """The sessionmaker is ``database`` everywhere; "sessions" are IdP and provider sessions."""
    fields = {f.name for f in dataclasses.fields(Runtime)}
    assert "database" in fields
    assert "sessions" not in fields
    assert not {"SessionFactory", "make_session_factory"} & set(orchestrator.store.__all__)
