"""Unit tests of ``RetryPolicy``: backoff with equal jitter, Retry-After, and giving up."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.retry import RetryPolicy

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def _backoff(policy: RetryPolicy, attempt: int) -> float:
    return min(policy.max_delay, policy.initial_delay * 2.0 ** (attempt - 1))


@pytest.mark.parametrize("attempt", range(1, 11))
@pytest.mark.parametrize("seed", [0, 1, 42, 2026])
def test_delay_is_between_half_backoff_and_backoff(attempt: int, seed: int) -> None:
    """delay(n) lies in [backoff/2, backoff], backoff = initial * 2**(n-1) capped at max_delay."""
    policy = RetryPolicy(initial_delay=2.0, max_delay=600.0)
    rng = random.Random(seed)
    backoff = _backoff(policy, attempt)
    for _ in range(50):
        delay = policy.delay(attempt, rng=rng)
        assert backoff / 2 <= delay <= backoff
        assert delay <= policy.max_delay


def test_backoff_doubles_until_the_cap() -> None:
    """The upper bound doubles per attempt and is flat once max_delay is reached."""
    policy = RetryPolicy(initial_delay=1.0, max_delay=16.0)
    rng = random.Random(7)
    highest = [max(policy.delay(n, rng=rng) for _ in range(200)) for n in range(1, 9)]
    assert highest[0] <= 1.0
    assert 4.0 < highest[3] <= 8.0
    for value in highest[4:]:
        assert 8.0 <= value <= 16.0
    lowest = [min(policy.delay(n, rng=rng) for _ in range(200)) for n in range(5, 9)]
    assert all(value >= 8.0 for value in lowest)


def test_delay_is_reproducible_with_the_same_seed() -> None:
    """Two generators with the same seed give the same delays (the rng is really used)."""
    policy = RetryPolicy()
    first = [policy.delay(n, rng=random.Random(3)) for n in range(1, 11)]
    second = [policy.delay(n, rng=random.Random(3)) for n in range(1, 11)]
    assert first == second
    assert len({policy.delay(6, rng=random.Random(s)) for s in range(20)}) > 1


def test_delay_spreads_over_the_whole_jitter_range() -> None:
    """Jitter covers both halves of [backoff/2, backoff], not a single point."""
    policy = RetryPolicy(initial_delay=8.0, max_delay=600.0)
    rng = random.Random(11)
    delays = [policy.delay(1, rng=rng) for _ in range(400)]
    assert min(delays) < 5.0
    assert max(delays) > 7.0


def test_longer_retry_after_wins() -> None:
    """A Retry-After longer than the jittered backoff is the delay."""
    policy = RetryPolicy(initial_delay=2.0, max_delay=600.0)
    assert policy.delay(1, retry_after=30.0, rng=random.Random(0)) == 30.0
    assert policy.delay(3, retry_after=120.0, rng=random.Random(0)) == 120.0


def test_shorter_retry_after_does_not_shorten_backoff() -> None:
    """A Retry-After shorter than the backoff leaves the jittered backoff in force."""
    policy = RetryPolicy(initial_delay=16.0, max_delay=600.0)
    delay = policy.delay(2, retry_after=1.0, rng=random.Random(5))
    assert 16.0 <= delay <= 32.0


def test_retry_after_is_capped_at_max_delay() -> None:
    """A huge Retry-After is cut to max_delay."""
    policy = RetryPolicy(initial_delay=2.0, max_delay=60.0)
    assert policy.delay(1, retry_after=10_000.0, rng=random.Random(0)) == 60.0
    assert policy.delay(1, retry_after=float("inf"), rng=random.Random(0)) == 60.0


def test_next_attempt_is_now_plus_delay() -> None:
    """next_attempt after a failure is within [now + backoff/2, now + backoff]."""
    policy = RetryPolicy(max_attempts=5, initial_delay=10.0, max_delay=600.0)
    for attempts in range(1, 5):
        when = policy.next_attempt(attempts, NOW, NOW)
        assert when is not None
        backoff = _backoff(policy, attempts)
        assert NOW + timedelta(seconds=backoff / 2) <= when <= NOW + timedelta(seconds=backoff)


def test_next_attempt_honours_retry_after() -> None:
    """next_attempt with a long Retry-After is exactly now + Retry-After."""
    policy = RetryPolicy(initial_delay=1.0, max_delay=600.0)
    assert policy.next_attempt(1, NOW, NOW, retry_after=45.0) == NOW + timedelta(seconds=45)


@pytest.mark.parametrize("max_attempts", [1, 2, 5, 8])
def test_next_attempt_gives_up_at_max_attempts(max_attempts: int) -> None:
    """No retry once ``max_attempts`` attempts were made; retries before that."""
    policy = RetryPolicy(max_attempts=max_attempts, initial_delay=1.0)
    assert policy.next_attempt(max_attempts, NOW, NOW) is None
    assert policy.next_attempt(max_attempts + 1, NOW, NOW) is None
    if max_attempts > 1:
        assert policy.next_attempt(max_attempts - 1, NOW, NOW) is not None


def test_next_attempt_gives_up_beyond_max_age() -> None:
    """No retry when the next try would fall later than ``max_age`` after creation."""
    policy = RetryPolicy(max_attempts=100, max_age=3600.0, initial_delay=10.0, max_delay=20.0)
    created = NOW - timedelta(seconds=3600 - 5)  # next try (>= 10 s away) is past the age
    assert policy.next_attempt(2, created, NOW) is None
    young = NOW - timedelta(seconds=3600 - 60)  # next try (<= 20 s away) is within it
    assert policy.next_attempt(2, young, NOW) is not None


def test_retry_after_beyond_max_age_gives_up() -> None:
    """A Retry-After that lands past ``max_age`` ends the retries."""
    policy = RetryPolicy(max_attempts=100, max_age=100.0, initial_delay=1.0, max_delay=600.0)
    assert policy.next_attempt(1, NOW, NOW, retry_after=50.0) == NOW + timedelta(seconds=50)
    assert policy.next_attempt(1, NOW, NOW, retry_after=150.0) is None


def test_default_policy_values() -> None:
    """Defaults: 8 attempts, 6 hours, 2 s first delay, 10 min cap."""
    policy = RetryPolicy()
    assert (policy.max_attempts, policy.max_age, policy.initial_delay, policy.max_delay) == (
        8,
        6 * 3600.0,
        2.0,
        600.0,
    )
