"""``logout-orchestrator demo``: the whole pipeline on embedded defaults, printed."""

from __future__ import annotations

import json
import tempfile
import uuid
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path
from string import Template
from typing import Any

from dramatiq import Message
from rich.console import Console
from sqlalchemy import select

from orchestrator.audit import AuditQuery, query_audit
from orchestrator.errors import InputError
from orchestrator.logging import configure_logging
from orchestrator.queues import HANDLE_EVENT_ACTOR, events_queue
from orchestrator.runtime import Runtime
from orchestrator.settings import Settings
from orchestrator.store import Delivery
from orchestrator.validation import parse_event_lines
from protocols.oidc import OidcHandler
from protocols.saml import SamlHandler
from workers.demo_rps import DemoRelyingParties, DemoServiceProvider
from workers.process import embedded
from workers.tables import print_audit_table

__all__ = ["demo_events", "run_demo"]

#: What the demo prints of each logout token's claims and each LogoutRequest.
_SHOWN = ("sid", "sub", "name_id", "session_index", "reason")


def _event(kind: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "event_id": str(uuid.uuid4()),
        "occurred_at": datetime.now(UTC).isoformat(),
        **fields,
    }


def demo_events() -> list[dict[str, Any]]:
    """One event of each kind the demo data can show."""
    return [
        _event(
            "logout.user",
            session_id="s-1",
            initiator="user",
            request={
                "ip": "81.2.69.142",
                "user_agent": "Firefox",
                "path": "/logout",
                "method": "GET",
            },
        ),
        _event("logout.provider", session_id="s-3", provider="wiki", initiator="user"),
        _event(
            "session.binding_violation",
            session_id="s-4",
            initiator="policy",
            binding={"reason": "geoip.country", "previous_value": "SE", "new_value": "GB"},
            ip={"previous": "89.160.20.112", "new": "81.2.69.142"},
            asn={"asn": 29518, "as_org": "Bredband2 AB", "network": "89.160.0.0/17"},
            geo={
                "continent": "EU",
                "country": "GB",
                "city": "London",
                "lat": 51.5142,
                "long": -0.0931,
            },
            http_request={"path": "/app", "method": "GET", "args": {}, "user_agent": "Firefox"},
        ),
        _event("user.revoke_all", user_id="alice", initiator="admin", actor="admin@example.com"),
    ]


def run_demo(out: Console, data_dir: str | None) -> int:
    """Load sample providers and sessions, publish sample events, print the audit trail."""
    folder = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="logout-demo-"))
    settings = Settings.load(
        None,
        data_dir=folder,
        database_url=f"sqlite:///{folder / 'demo.db'}",
        broker_url="memory://",
        log_level="WARNING",
        log_format="console",
        worker_threads=4,
        retry_initial_delay=0.5,
        retry_max_delay=2.0,
        issuer="http://idp.demo.localhost",
        # The demo's RPs listen on 127.0.0.1, which the egress policy refuses by default.
        egress_allow=["127.0.0.1"],
    )
    configure_logging(settings.log_level, settings.log_format)
    out.rule("logout-orchestrator demo")
    out.print(f"data: {folder} (SQLite), broker: in-process", markup=False)
    runtime = Runtime.start(settings)
    runtime.start_handlers()
    oidc = runtime.handlers.get("oidc")
    jwks = oidc.keys.jwks() if isinstance(oidc, OidcHandler) else {"keys": []}
    saml = runtime.handlers.get("saml")
    sp = (
        DemoServiceProvider(folder / "demo-sp", saml.identity.current.certificate)
        if isinstance(saml, SamlHandler)
        else None
    )
    rps = DemoRelyingParties(jwks, settings.issuer, sp).start()
    out.print(
        f"sample relying parties on {rps.url}: wiki 200, chat 204, crm 400, mail 503 then 200, "
        "payroll (SAML over SOAP) a signed LogoutResponse",
        markup=False,
    )
    try:
        data = files("workers") / "demo_data"
        template = Template((data / "providers.toml").read_text(encoding="utf-8"))
        loaded = runtime.registry.load_providers_file(
            template.substitute(rp=rps.url, sp_certificate=sp.certificate_path if sp else "unused"),
            "providers.toml",
        )
        for warning in loaded.warnings:
            out.print(f"[yellow]warning[/]: {warning}")
        imported = runtime.registry.import_lines(
            (data / "sessions.jsonl").read_text(encoding="utf-8").splitlines()
        )
        out.print(
            f"loaded {loaded.created + loaded.updated} providers, "
            f"{imported.created + imported.updated} sessions and provider sessions"
        )

        out.rule("an invalid event is refused before it is published")
        try:
            parse_event_lines('{"type": "logout.user", "event_id": "42", "initiator": "nobody"}')
        except InputError as exc:
            for problem in exc.problems:
                out.print(f"  {problem}", markup=False)

        events = demo_events()
        with embedded(settings, runtime) as actors:
            parsed = parse_event_lines("\n".join(json.dumps(e) for e in events))
            broker = actors.handle_event.broker
            # The user's own logout first, then the admin's revocation of the rest: were
            # both in flight at once, either could end s-1 and the demo would vary per run.
            actors.publisher.enqueue(parsed[:-1])
            broker.join(actors.handle_event.queue_name, timeout=30_000)
            actors.publisher.enqueue(parsed[-1:])
            actors.publisher.enqueue(parsed[:1])  # the same event again: a duplicate
            # What a publisher in another language could put on the queue unchecked:
            broker.enqueue(
                Message(
                    queue_name=events_queue(settings.namespace),
                    actor_name=HANDLE_EVENT_ACTOR,
                    args=({"type": "session.revoke", "session_id": "s-9"},),
                    kwargs={},
                    options={},
                )
            )
            broker.join(actors.handle_event.queue_name, timeout=30_000)
            broker.join(actors.deliver.queue_name, timeout=30_000)
        out.rule("audit trail")
        with runtime.database() as db:
            records = query_audit(db, AuditQuery(limit=None))
            deliveries = list(db.scalars(select(Delivery).order_by(Delivery.created_at)))
        print_audit_table(records, out.file)
        out.rule("deliveries")
        for d in deliveries:
            out.print(
                f"  {d.provider:8} session {d.session_id}: {d.status} ({d.last_error or 'ok'})",
                markup=False,
            )
        out.rule(
            "what the relying parties received (each token verified against the JWKS, "
            "each LogoutRequest against the IdP certificate)"
        )
        for got in rps.received:
            claims = got.claims or {}
            shown = " ".join(f"{k}={claims[k]}" for k in _SHOWN if k in claims)
            note = f"  ({got.error})" if got.error else ""
            out.print(
                f"  {got.rp:7} HTTP {got.status}  {shown} verified={got.claims is not None}{note}",
                markup=False,
            )
        out.print(
            f"\n{len(records)} audit records; query them with: LOGOUT_DATABASE_URL="
            f"{settings.effective_database_url} logout-orchestrator audit list",
            markup=False,
        )
    finally:
        rps.stop()
        runtime.close()
    return 0
