"""What the worker says at start about a Redis broker's persistence (a fake client answering
CONFIG GET), and how often it keeps its heartbeat and requeues dead workers' messages."""

from __future__ import annotations

import pytest
import redis

from workers.redis_upkeep import persistence_warning, upkeep_interval


class FakeRedis:
    """Answers CONFIG GET from ``settings``; ``refuse`` raises what a managed Redis says."""

    def __init__(self, settings: dict[str, str], refuse: redis.RedisError | None = None) -> None:
        self.settings = settings
        self.refuse = refuse

    def config_get(self, pattern: str) -> dict[str, str]:
        if self.refuse is not None:
            raise self.refuse
        return {pattern: self.settings[pattern]}


WHERE = "redis://redis.internal:6379/0"


def test_append_only_redis_needs_no_warning() -> None:
    """appendonly yes: a restart keeps the queues, nothing to say."""
    assert persistence_warning(FakeRedis({"appendonly": "yes", "save": ""}), WHERE, 300) is None


def test_redis_without_persistence_loses_everything() -> None:
    """appendonly no, save "": the warning names the server, says every queued message is
    lost, what recovery sends again after the grace, and the fix."""
    warning = persistence_warning(FakeRedis({"appendonly": "no", "save": ""}), WHERE, 300)
    assert warning is not None
    assert WHERE in warning
    assert "memory only" in warning
    assert "loses every one of them" in warning
    assert "300 s (recovery_grace)" in warning
    assert warning.endswith("Set appendonly yes to keep them")


def test_redis_with_snapshots_only_loses_what_came_since() -> None:
    """appendonly no with save rules: what was queued since the last snapshot is lost."""
    settings = {"appendonly": "no", "save": "3600 1 300 100"}
    warning = persistence_warning(FakeRedis(settings), WHERE, 60)
    assert warning is not None
    assert 'save "3600 1 300 100"' in warning
    assert "since the last snapshot" in warning
    assert "60 s (recovery_grace)" in warning


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (redis.ResponseError("unknown command 'CONFIG'"), "CONFIG GET was refused"),
        (redis.ConnectionError("Connection reset by peer"), "no answer"),
    ],
)
def test_a_redis_refusing_config_is_said_so(error: redis.RedisError, said: str) -> None:
    """A managed Redis refusing CONFIG (or a dropped connection): the worker says it cannot
    check, why, and what a restart would lose; it never raises."""
    warning = persistence_warning(FakeRedis({}, refuse=error), WHERE, 300)
    assert warning is not None
    assert warning.startswith(f"cannot check the persistence of Redis at {WHERE} ({said}")
    assert "a restart loses queued messages" in warning


def test_upkeep_runs_four_times_per_heartbeat_timeout() -> None:
    """A dead worker's messages are requeued at most 1.25 x the heartbeat timeout after its
    last heartbeat: the upkeep runs every quarter of it."""
    assert upkeep_interval(15_000) == 3.75
    assert upkeep_interval(4_000) == 1.0
