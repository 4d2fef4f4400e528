"""The logout engine: one package of stages, run in order by :class:`LogoutEngine`.

``engine`` runs ``intake`` → ``ending`` → ``deliveries`` + ``planning`` → ``attempts`` →
``deliveries`` + ``rollup``; ``batch`` holds what is known of a message after each stage.
"""

from typing import TYPE_CHECKING

from schemas._lazy import lazy_exports

if TYPE_CHECKING:
    from orchestrator.logout.attempts import Attempts
    from orchestrator.logout.batch import HandleResult, Outcome, Work
    from orchestrator.logout.deliveries import Deliveries, Recorded, RetryScheduler
    from orchestrator.logout.ending import end_reason
    from orchestrator.logout.engine import EventProcessor, LogoutEngine
    from orchestrator.logout.rollup import Tally

__all__ = [
    "Attempts",
    "Deliveries",
    "EventProcessor",
    "HandleResult",
    "LogoutEngine",
    "Outcome",
    "Recorded",
    "RetryScheduler",
    "Tally",
    "Work",
    "end_reason",
]

__getattr__, __dir__ = lazy_exports(__name__)
