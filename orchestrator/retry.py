"""When to try a failed delivery again: exponential backoff with jitter, Retry-After honoured."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = ["RetryPolicy"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Limits on retrying transient failures; permanent failures are never retried."""

    max_attempts: int = 8
    max_age: float = 6 * 3600.0
    initial_delay: float = 2.0
    max_delay: float = 600.0

    def delay(
        self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None
    ) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based).

        "Equal jitter": half the exponential backoff, plus a random share of the other half.
        A ``Retry-After`` longer than that wins (capped at ``max_delay``).
        """
        backoff = min(self.max_delay, self.initial_delay * 2.0 ** max(0, attempt - 1))
        spread: float = (rng or random).uniform(0, backoff / 2)
        jittered = backoff / 2 + spread
        if retry_after is not None:
            return min(self.max_delay, max(jittered, retry_after))
        return jittered

    def next_attempt(
        self, attempts: int, created_at: datetime, now: datetime, retry_after: float | None = None
    ) -> datetime | None:
        """When to try again after ``attempts`` failed attempts, or None to give up."""
        if attempts >= self.max_attempts:
            return None
        when = now + timedelta(seconds=self.delay(attempts, retry_after))
        if (when - created_at).total_seconds() > self.max_age:
            return None
        return when
