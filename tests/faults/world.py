"""One fault scenario's world: its Redis server, database, relying parties and workers.

A scenario seeds sessions, publishes through the CLI, starts real workers, injects its
faults (:meth:`World.fault` notes each), then :meth:`World.finish` waits until everything
is handled (or the deadline passes), lets the broker drain, and measures.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy.exc import SQLAlchemyError

from orchestrator.store import AuditRow, Delivery, EventRecord, utcnow
from protocols.oidc import OidcHandler
from protocols.saml import SamlHandler
from schemas import AuditType
from tests.integration.servers import OwnPostgres, OwnRedis, server_port
from tests.integration.support import (
    Stack,
    WorkerProcess,
    json_lines,
    logout_event,
    session_record,
    wait_until,
)
from workers.demo_rps import DemoRelyingParties, DemoServiceProvider

from .measure import Expected, Figures, count_stranded, measure, table
from .poison import RawMessage

__all__ = ["Campaign", "Sizes", "World", "assert_sound", "world_of"]

#: Providers of every scenario: an OIDC RP and a SAML SP (SOAP), both on one loopback server.
PROVIDERS = ("wiki", "payroll")
_POLL = 0.25


@dataclass(frozen=True, slots=True)
class Sizes:
    """How big and how long: the CI variant, or the long one (``LOGOUT_TEST_FAULTS=full``)."""

    name: str
    kill_events: int
    redis_events: int
    postgres_events: int
    slow_events: int
    poison_valid: int
    poison_repeat: int
    #: Seconds, from the end of the last fault, for everything to be handled.
    deadline: float
    #: Seconds for the broker to hand out its last messages once everything is handled.
    drain: float
    #: Settings of every worker (beyond the integration suite's).
    worker_settings: Mapping[str, str]


@dataclass
class Campaign:
    """The figures of every scenario run in this session, kept as JSON at ``path``."""

    sizes: Sizes
    path: Path
    postgres: OwnPostgres | None = None
    results: list[Figures] = field(default_factory=list)

    def record(self, figures: Figures) -> None:
        self.results.append(figures)
        document = {
            "variant": self.sizes.name,
            "sizes": asdict(self.sizes),
            "scenarios": [row.as_json() for row in self.results],
        }
        self.path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


class World:
    """See the module docstring."""

    def __init__(self, campaign: Campaign, stack: Stack, broker: OwnRedis, name: str) -> None:
        self.campaign = campaign
        self.stack = stack
        self.broker = broker
        self.name = name
        self.rps: DemoRelyingParties | None = None
        self.expected = Expected(deliveries={})
        self.faults: list[str] = []
        self.windows: list[tuple[datetime, datetime]] = []
        self.fault_ended: float | None = None
        self.killed: set[int] = set()

    # -- set-up ------------------------------------------------------------------------

    def prepare(self, count: int, *, delay: float = 0.0) -> list[dict[str, Any]]:
        """Start the relying parties, load both providers and ``count`` IdP sessions with a
        provider session at each; returns one ``logout.user`` event per session."""
        with self.stack.runtime() as runtime:
            runtime.start_handlers()
            oidc, saml = runtime.handlers["oidc"], runtime.handlers["saml"]
            assert isinstance(oidc, OidcHandler)
            assert isinstance(saml, SamlHandler)
            jwks, certificate = oidc.keys.jwks(), saml.identity.current.certificate
            issuer = runtime.settings.issuer
        sp = DemoServiceProvider(self.stack.tmp_path / "sp", certificate)
        self.rps = DemoRelyingParties(jwks, issuer, sp, delay=delay, port=server_port()).start()
        providers = [
            {
                "name": "wiki",
                "protocol": "oidc",
                "client_id": "wiki",
                "backchannel_logout_uri": f"{self.rps.url}/wiki/backchannel-logout",
                "allow_http": True,
            },
            {
                "name": "payroll",
                "protocol": "saml",
                "entity_id": sp.entity_id,
                "sls_url": f"{self.rps.url}/payroll/saml/sls",
                "sls_binding": "soap",
                "sp_certificate": str(sp.certificate_path),
                "require_signed_responses": True,
                "allow_http": True,
            },
        ]
        sessions = [f"{self.name}-{n:05d}" for n in range(count)]
        records: list[dict[str, Any]] = []
        for n, session_id in enumerate(sessions):
            records.append(session_record(session_id, f"u-{n}"))
            link = {"kind": "provider_session", "session_id": session_id}
            records.append({**link, "provider": "wiki", "sid": f"sid-{n}", "sub": f"u-{n}"})
            records.append(
                {
                    **link,
                    "provider": "payroll",
                    "name_id": f"u-{n}@example.test",
                    "session_index": f"idx-{n}",
                }
            )
        self.stack.seed(providers=providers, records=records)
        events = [logout_event(session_id) for session_id in sessions]
        self.expected = Expected(deliveries={e["event_id"]: len(PROVIDERS) for e in events})
        return events

    def expect_raw(self, raw: Sequence[RawMessage]) -> None:
        """Also expect these raw messages to be handled (rejected, or their event handled)."""
        self.expected = Expected(
            deliveries=self.expected.deliveries,
            raw=len(raw),
            raw_event_ids=[m.event_id for m in raw if m.event_id is not None],
        )

    def publish(self, events: Sequence[Mapping[str, Any]]) -> None:
        """``logout-orchestrator publish FILE``, as an IdP component would; it must succeed."""
        path = self.stack.tmp_path / f"events-{secrets.token_hex(3)}.jsonl"
        path.write_text(json_lines(events), encoding="utf-8")
        result = self.stack.cli("publish", str(path), timeout=300)
        if result.returncode != 0:
            pytest.fail(f"publish exited {result.returncode}: {result.stderr[-2000:]}")

    def start_worker(
        self, extra: Mapping[str, str] | None = None, threads: int = 4
    ) -> WorkerProcess:
        """A real ``logout-orchestrator worker``: one process, ``threads`` threads."""
        settings = {"LOGOUT_RETRY_INITIAL_DELAY": "0.2", "LOGOUT_RETRY_MAX_DELAY": "2"}
        settings.update(self.campaign.sizes.worker_settings)
        return self.stack.start_worker({**settings, **(extra or {})}, threads=threads)

    # -- during the run ----------------------------------------------------------------

    def completed(self) -> int:
        """Events completed so far (0 while the database does not answer)."""
        try:
            return self.stack.count(EventRecord, EventRecord.status == "completed")
        except SQLAlchemyError:
            return 0

    def wait_completed(self, count: int) -> None:
        """Until ``count`` events are completed; noted (not failed) after the deadline."""
        if wait_until(lambda: self.completed() >= count, self.campaign.sizes.deadline) is None:
            self.faults.append(f"(only {self.completed()} of {count} events completed in time)")

    def kill(self, worker: WorkerProcess) -> None:
        """SIGKILL ``worker``: a delivery open then may have been sent and not recorded."""
        began = utcnow()
        worker.kill()
        self.killed.add(worker.pid)
        self.fault(f"SIGKILL of worker {worker.pid}", (began, utcnow()))

    def postgres_outage(self, seconds: float) -> None:
        """Stop PostgreSQL (fast shutdown: every connection cut) for ``seconds``; a delivery
        open then may have been sent and not recorded."""
        postgres = self.campaign.postgres
        assert postgres is not None
        began = utcnow()
        postgres.stop()
        time.sleep(seconds)  # the outage itself: its length is what the scenario is about
        postgres.start()
        self.stack.engine.dispose()  # its pooled connections died with the server
        self.fault(f"PostgreSQL stopped for {seconds:g} s (fast shutdown)", (began, utcnow()))

    def fault(self, what: str, window: tuple[datetime, datetime] | None = None) -> None:
        """Note a fault that just ended; recovery is timed from the last one. ``window``:
        when a send could be cut from its record (at-least-once allows a second POST of a
        delivery open then)."""
        self.faults.append(what)
        if window is not None:
            self.windows.append(window)
        self.fault_ended = time.monotonic()

    # -- the end -----------------------------------------------------------------------

    def _handled(self) -> bool:
        expected = self.expected
        valid = list(expected.deliveries)
        count, completed = self.stack.count, EventRecord.status == "completed"
        try:
            done = count(EventRecord, completed, EventRecord.event_id.in_(valid))
            deliveries = count(Delivery)
            open_ = count(Delivery, Delivery.status.in_(["pending", "retrying"]))
            settled = count(AuditRow, AuditRow.type == AuditType.LOGOUT_SETTLED.value)
            rejected = count(AuditRow, AuditRow.type == AuditType.EVENT_REJECTED.value)
            raw_done = count(
                EventRecord, completed, EventRecord.event_id.in_(list(expected.raw_event_ids))
            )
        except SQLAlchemyError:
            return False
        return (
            done == len(valid)
            and deliveries == sum(expected.deliveries.values())
            and open_ == 0
            and settled >= len(valid)
            and rejected + raw_done >= expected.raw
        )

    def _stranded(self) -> int | None:
        try:
            return count_stranded(self.stack.redis)
        except redis.RedisError:
            return None

    def finish(self) -> Figures:
        """Wait until everything is handled (at most the deadline), let the broker drain,
        measure, and record the figures in the campaign."""
        sizes = self.campaign.sizes
        start = self.fault_ended if self.fault_ended is not None else time.monotonic()
        left = max(0.0, sizes.deadline - (time.monotonic() - start))
        handled = wait_until(self._handled, left, _POLL) is not None
        recovered = time.monotonic() - start if handled else None
        wait_until(lambda: self._stranded() == 0, sizes.drain, _POLL)
        stranded = self._stranded()
        notes = list(self.faults)
        if not handled:
            notes.append(f"not everything handled {sizes.deadline:g} s after the last fault")
        if stranded is None:
            notes.append("the broker did not answer at the end")
        for worker in self.stack.workers:
            code = worker.process.poll()
            if code is not None and worker.pid not in self.killed:
                notes.append(f"worker {worker.pid} exited by itself with status {code}")
        assert self.rps is not None, "prepare() starts the relying parties"
        with self.stack.db() as db:
            figures = measure(
                db,
                self.name,
                self.expected,
                list(self.rps.received),
                self.windows,
                stranded if stranded is not None else -1,
                recovered,
                notes,
            )
        self.campaign.record(figures)
        return figures

    def close(self) -> None:
        self.stack.close()
        if self.rps is not None:
            self.rps.stop()


def assert_sound(figures: Figures) -> None:
    """The campaign's verdict: nothing lost, stranded, duplicated or contradictory, and
    no second POST that at-least-once does not explain."""
    problems = [
        f"{name}: {value}"
        for name, value in (
            ("lost", figures.lost),
            ("stranded", figures.stranded),
            ("duplicated audit facts", figures.duplicated),
            ("contradictory records", figures.contradictory),
            ("doubled deliveries at-least-once does not explain", figures.doubled_unexplained),
            ("requests the relying parties refused", figures.refused_by_rp),
        )
        if value != 0
    ]
    if figures.recovered_s is None:
        problems.append("never recovered: not everything was handled by the deadline")
    assert not problems, "\n".join(
        [f"scenario {figures.scenario}: " + "; ".join(problems), *table([figures])]
        + [f"  fault: {what}" for what in figures.faults]
        + [f"  e.g. {example}" for example in figures.examples]
    )


@contextmanager
def world_of(campaign: Campaign, tmp_path: Path, logs: list[Path], name: str) -> Iterator[World]:
    """A world on its own Redis server and a new database of the campaign's PostgreSQL."""
    assert campaign.postgres is not None
    broker = OwnRedis(tmp_path / "redis")
    client = broker.client(socket_timeout=10)
    world: World | None = None
    try:
        broker.start()
        if not campaign.postgres.running():
            campaign.postgres.start()  # an earlier scenario's outage ended in a failure
        stack = Stack(
            tmp_path=tmp_path,
            database_url=campaign.postgres.create_database(),
            broker_url=broker.url,
            namespace=f"faults{secrets.token_hex(3)}",
            redis=client,
            logs=logs,
        )
        world = World(campaign, stack, broker, name)
        yield world
    finally:
        if world is not None:
            world.close()
        client.close()
        broker.stop()
