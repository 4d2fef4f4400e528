"""Redis upkeep on a clock: a worker's heartbeat, and dead workers' messages requeued in time.

dramatiq's Redis broker keeps each message a consumer has fetched (its prefetch included) in
that worker's ack set until it is acknowledged. A worker whose heartbeat is older than
``heartbeat_timeout`` is dead, and its ack sets go back to their queues, but only during
"maintenance", which dramatiq runs on a random ``maintenance_chance`` per million broker
commands: after a SIGKILL with the defaults, the dead worker's events waited 376 s. And a
heartbeat is refreshed only by a broker command, so a worker whose threads were all busy
for longer than the timeout would look dead.

:func:`keep_up` runs, every quarter of ``heartbeat_timeout``, one command per queue with
maintenance forced: it refreshes this worker's heartbeat and requeues the messages of every
dead worker. So what a dead worker held is back on its queue at most 1.25 x
``heartbeat_timeout`` after its last heartbeat, whatever the load, and idle consumers are
woken to fetch it.

:func:`persistence_warning` reads the server's persistence settings (``CONFIG GET``), for
the worker to say at start what a Redis restart would lose.
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

import redis
import structlog
from dramatiq.brokers.redis import RedisBroker

__all__ = [
    "ConfigReader",
    "UpkeptRedisBroker",
    "keep_up",
    "persistence_warning",
    "upkeep_interval",
]

_log = structlog.get_logger("logout.broker")


class _Forced(threading.local):
    on = False


class UpkeptRedisBroker(RedisBroker):
    """:class:`RedisBroker` whose maintenance can also be run on demand (:meth:`upkeep`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
        self._forced = _Forced()

    def _should_do_maintenance(self, command: str) -> int:
        if self._forced.on:
            return 1
        return int(super()._should_do_maintenance(command))

    def upkeep(self) -> None:
        """Refresh this worker's heartbeat and requeue dead workers' messages, on every
        declared queue (delay queues included)."""
        queues = self.get_declared_queues() | self.get_declared_delay_queues()
        self._forced.on = True
        try:
            for queue in sorted(queues):
                self.do_qsize(queue)  # any command but ack/nack runs the forced maintenance
        finally:
            self._forced.on = False
        self.after_upkeep(queues)

    def after_upkeep(self, queues: set[str]) -> None:
        """Hook: what a subclass does once messages may have been requeued."""


def upkeep_interval(heartbeat_timeout_ms: int) -> float:
    """Seconds between two :meth:`UpkeptRedisBroker.upkeep` runs of one worker."""
    return heartbeat_timeout_ms / 4000


def keep_up(broker: UpkeptRedisBroker, stop: threading.Event) -> threading.Thread:
    """Run :meth:`~UpkeptRedisBroker.upkeep` every :func:`upkeep_interval` until ``stop``,
    on a daemon thread; a Redis error is logged once per outage and tried again."""
    interval = upkeep_interval(broker.heartbeat_timeout)

    def run() -> None:
        failing = False
        while not stop.wait(interval):
            try:
                broker.upkeep()
            except redis.RedisError as exc:
                if not failing:
                    _log.warning(
                        "redis upkeep failed; dead workers' messages wait until it answers",
                        error=f"{type(exc).__name__}: {exc}",
                    )
                failing = True
                continue
            if failing:
                _log.info("redis upkeep resumed")
            failing = False

    thread = threading.Thread(target=run, name="logout-redis-upkeep", daemon=True)
    thread.start()
    return thread


class ConfigReader(Protocol):
    """What :func:`persistence_warning` asks of a Redis client."""

    def config_get(self, pattern: str) -> Any: ...


def persistence_warning(client: ConfigReader, where: str, grace: float) -> str | None:
    """What a restart of the Redis at ``where`` would lose, or None when it keeps an
    append-only file. ``grace``: ``recovery_grace``, after which the outbox sends again."""
    recovered = (
        f"events published through this package are sent again from the database's outbox "
        f"{grace:g} s (recovery_grace) after they were sent, delivery retries and stuck events "
        f"are picked up by the recovery sweep; messages other publishers enqueued are lost"
    )
    try:
        settings: dict[str, str] = {}
        for name in ("appendonly", "save"):
            settings.update((str(k), str(v)) for k, v in client.config_get(name).items())
    except redis.RedisError as exc:  # a managed Redis may refuse CONFIG
        why = "CONFIG GET was refused" if isinstance(exc, redis.ResponseError) else "no answer"
        return (
            f"cannot check the persistence of Redis at {where} ({why}: {exc}); if it runs "
            f"without appendonly, a restart loses queued messages: {recovered}"
        )
    if settings.get("appendonly") == "yes":
        return None
    save = settings.get("save", "")
    if not save:
        return (
            f'Redis at {where} keeps queued messages in memory only (appendonly no, save ""): '
            f"a restart loses every one of them; {recovered}. Set appendonly yes to keep them"
        )
    return (
        f'Redis at {where} has snapshots only (appendonly no, save "{save}"): a restart loses '
        f"what was queued since the last snapshot; {recovered}. Set appendonly yes to keep them"
    )
