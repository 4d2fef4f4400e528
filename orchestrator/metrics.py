"""Prometheus metrics of the worker and the HTTP service: the one place they are defined.

Most are counted from the audit trail as it is written (:func:`count_records`, called by
:func:`orchestrator.audit.emit` after each commit), so the engine holds no metric calls of
its own: ``event.received`` / ``.rejected`` / ``.duplicate`` by event type,
``logout.completed`` and ``logout.settled`` by outcome, ``delivery.*`` by protocol, provider
and status, ``plan.built``. The few facts no audit record carries are counted where they
happen: a delivery attempt's latency (the sender), a plan's build time (where plans are
stored, :func:`orchestrator.plans.save_plans`), expiries swept (the sweeper), binding
violations (the binding check), database and broker outages (the worker's guard).

Labels are low-cardinality only: an event type, a protocol, a provider name, an outcome;
never a user, a session or an event id. What the database knows at any moment (deliveries
retrying, the oldest pending one's age) is read at scrape time by :class:`DeliveryGauges`.

Processes: counters live in prometheus-client's default registry; with several processes
(``worker --processes N``, ``serve`` with ``api_workers`` > 1) the command sets
``PROMETHEUS_MULTIPROC_DIR`` before any of them imports prometheus-client
(:func:`multiprocess_dir`), and :func:`scrape` sums the processes' files.
"""

from __future__ import annotations

import collections
import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Final

import structlog
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from orchestrator.store import OPEN_DELIVERY_STATUSES, Database, Delivery, DeliveryStatus
from schemas import EVENT_TYPES, AuditRecord, AuditType
from schemas.audit import DELIVERY_AUDIT_TYPES

__all__ = [
    "CONTENT_TYPE",
    "MULTIPROC_VARIABLE",
    "DeliveryGauges",
    "count_backend_error",
    "count_binding_violation",
    "count_expired",
    "count_records",
    "count_ssf_set",
    "multiprocess_dir",
    "observe_attempt",
    "observe_plan_build",
    "observe_request",
    "registry_for",
    "scrape",
    "serve_metrics",
]

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST
MULTIPROC_VARIABLE: Final = "PROMETHEUS_MULTIPROC_DIR"

EVENTS = Counter(
    "logout_events_total",
    "Events the workers took, by type and outcome (received, rejected, duplicate).",
    ["type", "outcome"],
)
LOGOUTS_COMPLETED = Counter(
    "logout_logouts_completed_total",
    "Logouts whose back-channel deliveries are all final or retrying, by outcome "
    "(success, partial = some failed, retrying).",
    ["outcome"],
)
LOGOUTS_SETTLED = Counter(
    "logout_logouts_settled_total",
    "Logouts whose every delivery is final, by outcome (success, partial).",
    ["outcome"],
)
DELIVERIES = Counter(
    "logout_deliveries_total",
    "Delivery outcomes by protocol, provider and status (succeeded, failed, skipped are "
    "final; retrying counts each attempt that will be tried again).",
    ["protocol", "provider", "status"],
)
PLANS = Counter("logout_plans_built_total", "Front-channel stage plans built.")
PLAN_SECONDS = Histogram(
    "logout_plan_build_seconds",
    "From the start of an event's handling to its stage plan being stored.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
ATTEMPT_SECONDS = Histogram(
    "logout_delivery_attempt_seconds",
    "One back-channel HTTP exchange with a provider (sent to answered or failed).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
EXPIRED = Counter(
    "logout_sessions_expired_total", "Sessions the expiry sweeper ended, by reason.", ["reason"]
)
BINDING_VIOLATIONS = Counter(
    "logout_binding_violations_total", "Broken session bindings found, by reason.", ["reason"]
)
BACKEND_ERRORS = Counter(
    "logout_backend_errors_total",
    "Outages of the database or the broker a worker met (each one waited out).",
    ["backend"],
)

HTTP_REQUESTS = Counter(
    "logout_http_requests_total",
    "Requests the HTTP service answered, by route template, method and status.",
    ["route", "method", "status"],
)
HTTP_SECONDS = Histogram(
    "logout_http_request_seconds",
    "Time to answer a request of the HTTP service, by route template (long polls included).",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0),
)

SSF_SETS = Counter(
    "logout_ssf_sets_total",
    "Security Event Tokens pushed by upstream transmitters, by stream and result (accepted, "
    "ignored, or the RFC 8935 err of a refusal).",
    ["stream", "result"],
)

_log = structlog.get_logger("logout.metrics")

_EVENT_OUTCOMES: Final = {
    AuditType.EVENT_RECEIVED: "received",
    AuditType.EVENT_REJECTED: "rejected",
    AuditType.EVENT_DUPLICATE: "duplicate",
}
_KNOWN_TYPES: Final = frozenset(EVENT_TYPES)


def _event_type(record: AuditRecord) -> str:
    """The record's event type when it is a known one; an unknown one (a rejected event's
    could be anything) is ``other``, so a publisher cannot add label values at will."""
    kind = record.detail.get("type")
    return kind if isinstance(kind, str) and kind in _KNOWN_TYPES else "other"


def count_records(records: Sequence[AuditRecord]) -> None:
    """Count what the committed audit ``records`` say happened (each series once per call,
    by how many records it counts: a batch's records share a few label sets)."""
    counts: collections.Counter[tuple[Any, ...]] = collections.Counter()
    for record in records:
        kind = record.type
        if kind in _EVENT_OUTCOMES:
            counts[EVENTS, _event_type(record), _EVENT_OUTCOMES[kind]] += 1
        elif kind in DELIVERY_AUDIT_TYPES:
            protocol = str(record.detail.get("protocol") or "unknown")
            counts[DELIVERIES, protocol, record.provider or "unknown", record.outcome] += 1
        elif kind is AuditType.LOGOUT_COMPLETED:
            counts[LOGOUTS_COMPLETED, record.outcome] += 1
        elif kind is AuditType.LOGOUT_SETTLED:
            counts[LOGOUTS_SETTLED, record.outcome] += 1
        elif kind is AuditType.PLAN_BUILT:
            counts[(PLANS,)] += 1
    for (metric, *labels), count in counts.items():
        (metric.labels(*labels) if labels else metric).inc(count)


def observe_request(route: str, method: str, status: int, seconds: float) -> None:
    """The HTTP service answered ``method route`` (a template, never a path with ids)."""
    HTTP_REQUESTS.labels(route, method, str(status)).inc()
    HTTP_SECONDS.labels(route).observe(seconds)


def observe_plan_build(seconds: float) -> None:
    """A stage plan took ``seconds`` from its event's handling to being stored."""
    PLAN_SECONDS.observe(max(0.0, seconds))


def observe_attempt(seconds: float) -> None:
    """One back-channel exchange took ``seconds``."""
    ATTEMPT_SECONDS.observe(seconds)


def count_expired(reason: str, count: int = 1) -> None:
    """The sweeper ended ``count`` sessions for ``reason`` (idle, absolute)."""
    EXPIRED.labels(reason).inc(count)


def count_binding_violation(reason: str) -> None:
    """A session's binding broke for ``reason`` (``asn.changed``, ``geoip.country`` ...)."""
    BINDING_VIOLATIONS.labels(reason).inc()


def count_ssf_set(stream: str, result: str) -> None:
    """A configured ``stream`` received a SET: ``accepted``, ``ignored`` or refused with the
    RFC 8935 code ``result`` (both bounded: streams are configured, codes are six)."""
    SSF_SETS.labels(stream, result).inc()


def count_backend_error(backend: str) -> None:
    """A worker met an outage of ``backend`` (``database`` or ``broker``)."""
    BACKEND_ERRORS.labels(backend).inc()


_RETRYING: Final = ("logout_deliveries_retrying", "Deliveries waiting for their next attempt.")
_OLDEST: Final = (
    "logout_delivery_oldest_pending_seconds",
    "Age of the oldest delivery not yet final (pending or retrying); 0 when none.",
)


class DeliveryGauges(Collector):
    """Read at scrape time from the database: deliveries retrying, and how long the oldest
    delivery not yet final (pending or retrying) has waited (0 when none). With the database
    down they are left out (only the error's type is logged), so the counters are still
    served."""

    def __init__(self, database: Database) -> None:
        self._database = database

    def collect(self) -> Iterator[Metric]:
        try:
            with self._database() as db:
                retrying = db.scalar(
                    select(func.count())
                    .select_from(Delivery)
                    .where(Delivery.status == DeliveryStatus.RETRYING)
                )
                oldest = db.scalar(
                    select(func.min(Delivery.created_at)).where(
                        Delivery.status.in_(OPEN_DELIVERY_STATUSES)
                    )
                )
        except SQLAlchemyError as exc:
            _log.warning("delivery gauges left out", error_type=type(exc).__name__)
            return
        age = 0.0
        if oldest is not None:
            when = oldest if oldest.tzinfo else oldest.replace(tzinfo=UTC)
            age = max(0.0, (datetime.now(UTC) - when).total_seconds())
        yield GaugeMetricFamily(*_RETRYING, value=int(retrying or 0))
        yield GaugeMetricFamily(*_OLDEST, value=age)

    def describe(self) -> Iterator[Metric]:
        """The gauges' names, without reaching the database (the registry asks once)."""
        yield GaugeMetricFamily(*_RETRYING)
        yield GaugeMetricFamily(*_OLDEST)


@contextmanager
def multiprocess_dir() -> Iterator[str]:
    """Within the block, ``PROMETHEUS_MULTIPROC_DIR`` names a folder where every process
    started from now on counts: the operator's, else a new one removed afterwards. Enter it
    before the processes start (they read the variable when they import prometheus-client)."""
    folder = os.environ.get(MULTIPROC_VARIABLE)
    if folder:
        yield folder
        return
    folder = tempfile.mkdtemp(prefix="logout-metrics-")
    os.environ[MULTIPROC_VARIABLE] = folder
    try:
        yield folder
    finally:
        os.environ.pop(MULTIPROC_VARIABLE, None)
        shutil.rmtree(folder, ignore_errors=True)


def registry_for(database: Database | None = None) -> CollectorRegistry:
    """What a scrape reads: every process's metrics (multiprocess mode) or this one's, plus
    the :class:`DeliveryGauges` of ``database`` when given."""
    from prometheus_client import REGISTRY, multiprocess

    registry = CollectorRegistry(auto_describe=True)
    if os.environ.get(MULTIPROC_VARIABLE):
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(REGISTRY)
    if database is not None:
        registry.register(DeliveryGauges(database))
    return registry


def scrape(database: Database | None = None) -> bytes:
    """The metrics in Prometheus's text format (see :func:`registry_for`)."""
    return generate_latest(registry_for(database))


def serve_metrics(
    host: str, port: int, origins: tuple[str, str] = ("metrics_host", "metrics_port")
) -> Callable[[], None]:
    """Serve this process's (or, in multiprocess mode, every process's) metrics on
    ``host:port`` in a thread; returns what stops it. A port in use or a host that is no
    address of this machine is a :class:`ConfigurationError` naming the settings
    ``origins`` (host's, port's: ``Settings.origin``)."""
    from prometheus_client import start_http_server

    from orchestrator.listening import bind_error

    try:
        server, thread = start_http_server(port, host, registry=registry_for())
    except OSError as exc:  # socket.gaierror included
        raise bind_error(exc, host, port, origins) from None
    except UnicodeError as exc:  # a host name the IDNA codec refuses
        raise bind_error(OSError(errno.EINVAL, str(exc)), host, port, origins) from None

    def stop() -> None:
        server.shutdown()
        thread.join(timeout=5)

    return stop
