"""Running workers: one process in the foreground, or a supervisor that keeps N alive."""

from __future__ import annotations

import ctypes
import gc
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import dramatiq
import structlog
from dramatiq.brokers.redis import RedisBroker

from orchestrator.errors import ConfigurationError, LogoutError
from orchestrator.handlers import load_handlers, start_handlers
from orchestrator.logging import configure_logging
from orchestrator.metrics import multiprocess_dir, serve_metrics
from orchestrator.runtime import Runtime
from orchestrator.settings import Settings, redact_url
from orchestrator.store.engine import check_connection
from schemas.errors import IncompleteError
from workers.actors import Actors, declare_actors
from workers.broker import build_broker, check_broker, is_in_process
from workers.chain_upkeep import ChainUpkeep
from workers.outage import Guard, Health, Outage, reach, unguarded
from workers.redis_upkeep import UpkeptRedisBroker, keep_up, persistence_warning
from workers.stopping import stop_on_signals

__all__ = ["drain", "embedded", "run_worker", "serve"]

_log = structlog.get_logger("logout.worker")
_PR_SET_PDEATHSIG = 1


def _connected_broker(settings: Settings) -> dramatiq.Broker:
    broker = build_broker(settings)
    try:
        check_broker(broker, settings)
    except BaseException:
        broker.close()
        raise
    return broker


@contextmanager
def embedded(settings: Settings, runtime: Runtime | None = None) -> Iterator[Actors]:
    """An in-process broker and worker (``memory://``, or tests): yields the actors."""
    own = runtime is None
    runtime = runtime or Runtime.start(settings)
    broker = build_broker(settings)
    actors = declare_actors(broker, runtime)
    worker = dramatiq.Worker(broker, worker_threads=settings.worker_threads, worker_timeout=50)
    worker.start()
    stop = threading.Event()
    _start_periodic(actors, stop)
    try:
        actors.recover()
        yield actors
    finally:
        stop.set()
        worker.stop()
        broker.close()
        if own:
            runtime.close()


def drain(actors: Actors, wait: float, again: str) -> bool:
    """Wait, within one deadline of ``wait`` seconds, until the in-process worker of
    :func:`embedded` has handled every queued event, then every delivery.

    Events not all handled in time raise :class:`IncompleteError` (``again`` says how to go
    on); False when only delivery retries are left (they are recorded and resume later).
    A message that failed is already recorded by the pipeline, so joins never fail fast.
    """
    from dramatiq.brokers.stub import StubBroker
    from dramatiq.errors import QueueJoinTimeout

    broker = actors.handle_event.broker
    if not isinstance(broker, StubBroker):
        raise LogoutError("drain() is for the in-process broker of memory://")
    deadline = time.monotonic() + wait

    def left_ms() -> int:
        return max(1, int((deadline - time.monotonic()) * 1000))  # 0 would mean "forever"

    try:
        broker.join(actors.handle_event.queue_name, timeout=left_ms(), fail_fast=False)
    except QueueJoinTimeout as exc:
        raise IncompleteError(
            f"not every event was handled within {wait:g} s, and the in-process broker stops "
            f"with this command; {again} (an event already handled is handled once)"
        ) from exc
    try:
        broker.join(actors.deliver.queue_name, timeout=left_ms(), fail_fast=False)
    except QueueJoinTimeout:
        return False
    return True


def _every(
    interval: float, job: Callable[[], object], name: str, stop: threading.Event, guard: Guard
) -> None:
    while not stop.wait(interval):
        try:
            guard(job)
        except Exception:  # noqa: BLE001 - a failed sweep is logged and tried next interval
            if not stop.is_set():
                _log.exception("periodic job failed", job=name)


def _start_periodic(actors: Actors, stop: threading.Event, guard: Guard = unguarded) -> None:
    """The recovery sweep, the expiry sweep and the audit chain's upkeep (sealing and
    checkpoints), each on its own daemon thread."""
    settings = actors.runtime.settings
    upkeep = ChainUpkeep(actors.runtime)
    jobs = (
        ("recovery", settings.recovery_interval, actors.recover),
        ("expiry", settings.expiry_interval, actors.sweep_expired),
        ("audit-seal", settings.audit_seal_interval, upkeep.run),
    )
    for name, interval, job in jobs:
        threading.Thread(
            target=_every,
            args=(interval, job, name, stop, guard),
            name=f"logout-{name}",
            daemon=True,
        ).start()


def run_worker(settings: Settings, *, migrate: bool = True, parent: int | None = None) -> int:
    """Run one worker process until SIGTERM or SIGINT; returns the exit status.

    With ``parent`` (a supervisor's pid), it also stops when that process is gone.
    """
    if is_in_process(settings):
        raise ConfigurationError(
            "broker_url memory:// lives inside one process: a separate worker cannot share it; "
            "use redis:// or amqp://, or run `logout-orchestrator publish` (it processes "
            "events in-process with memory://)"
        )
    stop = threading.Event()
    with stop_on_signals(stop):
        return _run_worker(settings, stop, migrate=migrate, parent=parent)


def _run_worker(
    settings: Settings, stop: threading.Event, *, migrate: bool, parent: int | None
) -> int:
    # Nothing says "started" before the database and the broker have answered; handlers
    # load first, so a bad one stops the worker at once instead of after the wait.
    handlers = load_handlers(settings)
    start_handlers(settings, handlers)
    runtime = reach(lambda: Runtime.start(settings, migrate=migrate, handlers=handlers), stop)
    if runtime is None:
        return 0
    broker = reach(lambda: _connected_broker(settings), stop)
    if broker is None:
        runtime.close()
        return 0
    health = Health(
        database=Outage("database", lambda: check_connection(runtime.engine), stop),
        broker=Outage("broker", lambda: check_broker(broker, settings), stop),
    )
    actors = declare_actors(broker, runtime, health)
    worker = dramatiq.Worker(broker, worker_threads=settings.worker_threads)
    worker.start()
    if isinstance(broker, UpkeptRedisBroker):
        keep_up(broker, stop)
    _log.info(
        "worker started",
        pid=os.getpid(),
        threads=settings.worker_threads,
        broker=settings.broker_url.split(":", 1)[0],
        protocols=sorted(runtime.handlers),
    )
    health.guard(lambda: _warn_unserved(runtime))  # the database may go away at any time
    if parent is None:  # a supervisor warned once for all its workers
        _warn_if_volatile(broker, settings)
    _start_periodic(actors, stop, health.guard)
    # What start-up made lives as long as the process: keep it out of the collector's scans,
    # so a collection during an event's handling is shorter.
    gc.collect()
    gc.freeze()
    try:
        health.guard(actors.recover)
        while not stop.wait(1.0):
            if parent is not None and os.getppid() != parent:
                _log.warning("supervisor gone; stopping", supervisor=parent)
                stop.set()
    finally:
        worker.stop()
        broker.close()
        runtime.close()
        _log.info("worker stopped", pid=os.getpid())
    return 0


def _child(settings_data: dict[str, Any], parent: int) -> None:  # pragma: no cover - subprocess
    # Never outlive the supervisor: the kernel sends SIGTERM when it dies (Linux), and the
    # worker also watches its parent, so it finishes what it holds and stops either way.
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    settings = Settings.from_parent(settings_data)  # the supervisor read and warned
    configure_logging(settings.log_level, settings.log_format)
    sys.exit(run_worker(settings, migrate=False, parent=parent))


def _warn_if_volatile(broker: dramatiq.Broker, settings: Settings) -> None:
    """Say at start what a restart of a Redis broker would lose (nothing to say for an
    append-only Redis, or RabbitMQ: its queues are durable and its messages persistent)."""
    if isinstance(broker, RedisBroker):
        where = redact_url(settings.broker_url)
        warning = persistence_warning(broker.client, where, settings.recovery_grace)
        if warning is not None:
            _log.warning(warning)


def _warn_unserved(runtime: Runtime) -> None:
    """Say at start which enabled providers no enabled handler serves: their logouts are
    skipped (``delivery.skipped``), which an operator should hear before the first logout."""
    unserved = runtime.registry.unserved_providers()
    if unserved:
        _log.warning(
            "providers without an enabled handler; their logouts are skipped until the "
            "handler is enabled (protocols) or the provider is loaded with enabled = false",
            providers={name: protocol for name, protocol in unserved},
        )


def serve(settings: Settings) -> int:
    """``logout-orchestrator worker``: migrate once, then run ``worker_processes`` workers."""
    if is_in_process(settings):
        return run_worker(settings)  # raises the clear error
    stopping = threading.Event()
    with stop_on_signals(stopping):
        return _serve(settings, stopping)


def _serve(settings: Settings, stopping: threading.Event) -> int:
    # Loads handlers (fails fast on a bad one), then migrates once, waiting for the database.
    handlers = load_handlers(settings)
    start_handlers(settings, handlers)
    runtime = reach(lambda: Runtime.start(settings, handlers=handlers), stopping)
    if runtime is None:
        return 0
    runtime.close()
    _log.info("duration settings", durations=settings.duration_readings())
    if settings.metrics_port is None:
        return _run(settings, stopping)
    with ExitStack() as stack:
        if settings.worker_processes > 1:  # before the children start: they count in its files
            stack.enter_context(multiprocess_dir())
        host = settings.worker_metrics_host
        host_field = "metrics_host" if settings.metrics_host else "api_host"
        origins = (settings.origin(host_field), settings.origin("metrics_port"))
        stack.callback(serve_metrics(host, settings.metrics_port, origins))
        _log.info("metrics served", host=host, port=settings.metrics_port)
        return _run(settings, stopping)


def _run(settings: Settings, stopping: threading.Event) -> int:
    """Run the worker in this process, or ``worker_processes`` children supervised."""
    if settings.worker_processes == 1:
        return run_worker(settings, migrate=False)
    # The children would each wait for a broker that is down, each saying so: wait once here.
    broker = reach(lambda: _connected_broker(settings), stopping)
    if broker is None:
        return 0
    try:
        _warn_if_volatile(broker, settings)
    finally:
        broker.close()
    context = multiprocessing.get_context("spawn")
    data = settings.for_child()
    children = [
        context.Process(target=_child, args=(data, os.getpid()))
        for _ in range(settings.worker_processes)
    ]
    for child in children:
        child.start()
    _log.info("supervisor started", processes=len(children), pid=os.getpid())
    while not stopping.wait(0.5):
        for index, child in enumerate(children):
            if not child.is_alive():
                _log.error("worker process died; starting another", exitcode=child.exitcode)
                time.sleep(1)
                children[index] = context.Process(target=_child, args=(data, os.getpid()))
                children[index].start()
    for child in children:
        if child.pid is not None and child.is_alive():
            os.kill(child.pid, signal.SIGTERM)
    for child in children:
        child.join(timeout=60)
    failed = [c.exitcode for c in children if c.exitcode not in (0, -signal.SIGTERM)]
    if failed:
        raise LogoutError(f"worker processes exited with {failed}")
    return 0
