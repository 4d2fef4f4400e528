"""The outbox relay for one command (``sessions sweep``, ``binding check``).

A command writes its events to the outbox and then runs the relay this gives it: on the
configured broker, or, with ``memory://``, on an embedded worker that handles what the relay
published before the command returns. When the broker does not answer, the events stay in
the outbox and the command says so and exits with ``ExitCode.BROKER_UNAVAILABLE`` (4).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager

import structlog

from orchestrator.relay import BrokerSender, OutboxRelay, RelayReport
from orchestrator.runtime import Runtime
from orchestrator.settings import Settings
from schemas.errors import BrokerUnavailableError
from workers.broker import build_broker, is_in_process
from workers.process import drain, embedded

__all__ = ["command_relay", "command_runtime", "kept_message", "publish_written"]


_log = structlog.get_logger("logout.outbox")


def command_runtime(settings: Settings) -> Runtime:
    """The runtime of a command that writes to the outbox: with ``memory://`` its in-process
    worker sends, so the handlers are loaded; with a broker the workers do, and the command
    needs none of them (nor their plugins installed where it runs)."""
    return Runtime.start(settings, handlers=None if is_in_process(settings) else {})


@contextmanager
def command_relay(
    settings: Settings, runtime: Runtime, wait: float = 30.0
) -> Iterator[OutboxRelay]:
    """A relay on the configured broker; with ``memory://`` what it publishes is handled
    in-process (for at most ``wait`` seconds) before the block is left."""
    if not is_in_process(settings):
        broker = build_broker(settings)
        try:
            yield runtime.relay(BrokerSender(broker))
        finally:
            broker.close()
        return
    with embedded(settings, runtime) as actors:
        yield actors.relay
        if not drain(actors, wait, "what is left is sent again after recovery_grace"):
            _log.info("some deliveries are still retrying; they resume on the next run")


def kept_message(report: RelayReport) -> str:
    """One line for the operator: how many events wait in the outbox, why, and what next."""
    return (
        f"{report.pending} event(s) kept in the outbox: the broker did not answer "
        f"({report.error}); the next `logout-orchestrator sessions sweep` or a running worker "
        "publishes them once it answers"
    )


def publish_written(
    settings: Settings, runtime: Runtime, message_ids: Collection[str], wait: float = 30.0
) -> None:
    """Publish the outbox rows one command's commit wrote (with ``memory://``, handle them
    in-process); :class:`BrokerUnavailableError` (exit 4) when the broker did not answer:
    the rows stay in the outbox, for any worker's relay."""
    if not message_ids:
        return
    with command_relay(settings, runtime, wait) as relay:
        report = relay.run(only=message_ids)
    if report.error is not None:
        raise BrokerUnavailableError(
            f"{len(message_ids) - report.published} message(s) kept in the outbox: the broker "
            f"did not answer ({report.error}); a running worker publishes them once it answers"
        )
