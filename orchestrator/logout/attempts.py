"""Attempting deliveries: build each request with its handler, send them all at once, and
say what each answer means. No database: the engine records the outcomes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from dataclasses import replace
from datetime import datetime

import structlog

from orchestrator.errors import DeliveryError, PermanentDeliveryError
from orchestrator.leases import Leases
from orchestrator.logout.batch import Outcome, Work
from orchestrator.retry import RetryPolicy
from orchestrator.sender import Built, HttpSender, SendResult, TimeLeft
from orchestrator.store import DeliveryStatus, utcnow
from protocols import BackchannelRequest, BackchannelResponse, Channel

__all__ = ["Attempts"]

_log = structlog.get_logger("logout.fanout")

#: A batch's requests are signed in consecutive groups of at most :data:`_GROUP_MAX`, at least
#: :data:`_GROUPS` of them (or as many as there are signing threads) while the requests last,
#: so that the threads work side by side; past ``_GROUPS x _GROUP_MAX`` requests there are more
#: groups. A group is one task for a signing thread and one hand-over to the sender's loop (a
#: lock, a futex and a pipe write): per request, those cost more CPU than signing an ES256
#: token (measured in process, 32 events of 5 deliveries: 0.42 ms of CPU per delivery with a
#: task per request, 0.35 ms signing in the calling thread).
_GROUPS = 8
_GROUP_MAX = 16


class Attempts:
    """Carries out attempts: ``sender`` gives the process's HTTP sender, ``policy`` says
    when a transient failure is tried again, ``builders`` sign requests side by side."""

    def __init__(
        self,
        sender: Callable[[], HttpSender],
        policy: RetryPolicy,
        builders: Executor | None = None,
        threads: int = _GROUPS,
    ) -> None:
        """``threads``: how many threads ``builders`` runs (the least number of groups)."""
        self._sender = sender
        self._policy = policy
        self._builders = builders
        self._spread = max(_GROUPS, threads)

    def attempt(self, works: Sequence[Work], leases: Leases) -> dict[str, Outcome]:
        """Build every request and send them all at once; one outcome per delivery. Each
        is sent only while ``leases`` holds its attempt."""
        outcomes: dict[str, Outcome] = {}
        to_build: list[Work] = []
        for work in works:
            reason = skip_reason(work)
            if reason is None:
                to_build.append(work)
            else:
                outcomes[work.delivery_id] = Outcome(DeliveryStatus.SKIPPED, reason)
        if not to_build:
            return outcomes
        # Signing (RSA above all) releases the GIL: several threads sign side by side, and
        # each group of requests goes out as soon as it is built, while the next are signed.
        groups = _groups(to_build, self._spread)
        built: list[Future[Sequence[Built]]]
        if self._builders is not None and len(groups) > 1:
            built = [self._builders.submit(_build_all, group) for group in groups]
        else:
            built = [_done(_build_all(group)) for group in groups]
        time_left = [[_time_left(leases, work) for work in group] for group in groups]
        sent = self._sender().send_as_built(built, time_left)
        answered = utcnow()  # Retry-After counts from the answer, not from the send
        for work, item in zip(to_build, sent, strict=True):
            if isinstance(item, DeliveryError):
                outcomes[work.delivery_id] = self._failure(work, item, answered)
            else:
                request, result, latency = item
                outcome = self._interpret(work, request, result, answered)
                outcomes[work.delivery_id] = replace(outcome, latency=latency)
        return outcomes

    def _interpret(
        self, work: Work, request: BackchannelRequest, result: SendResult, answered: datetime
    ) -> Outcome:
        if isinstance(result, DeliveryError):
            return self._failure(work, result, answered)
        assert work.handler is not None  # only works with a handler are built
        try:
            work.handler.interpret_response(
                work.provider, work.session, request, result, work.context
            )
        except DeliveryError as exc:
            return self._failure(work, exc, answered, result)
        except Exception as exc:  # noqa: BLE001 - a handler's bug fails its delivery only
            failed = _handler_failed(work, exc, "reading the answer")
            return self._failure(work, failed, answered, result)
        return Outcome(DeliveryStatus.SUCCEEDED, status_code=result.status_code)

    def _failure(
        self,
        work: Work,
        exc: DeliveryError,
        answered: datetime,
        response: BackchannelResponse | None = None,
    ) -> Outcome:
        code = exc.status_code
        if code is None and response is not None:
            code = response.status_code
        if isinstance(exc, PermanentDeliveryError):
            return Outcome(
                DeliveryStatus.FAILED, exc.detail, code, facts=exc.facts, error_class="permanent"
            )
        retry_after = getattr(exc, "retry_after", None)
        when = self._policy.next_attempt(work.attempt, work.created_at, answered, retry_after)
        if when is None:
            detail = f"{exc.detail}; gave up after {work.attempt} attempts"
            return Outcome(
                DeliveryStatus.FAILED, detail, code, facts=exc.facts, error_class="transient"
            )
        wait = (when - answered).total_seconds()
        return Outcome(
            DeliveryStatus.RETRYING,
            exc.detail,
            code,
            when,
            retry_after,
            wait,
            exc.facts,
            error_class="transient",
        )


def skip_reason(work: Work) -> str | None:
    """Why the worker does not send this delivery (None: it does)."""
    provider = work.provider
    if work.handler is None:
        return f"no handler for protocol {provider.protocol!r} is enabled"
    if not provider.enabled:
        return "provider is disabled"
    if provider.settings is None:
        return "provider settings no longer validate; reload the providers file"
    channel = work.handler.channel(provider)
    if channel is not Channel.BACKCHANNEL:
        return f"{channel.value} logout is shown to the browser, not sent by the worker"
    return work.handler.skip_reason(provider)


def _time_left(leases: Leases, work: Work) -> TimeLeft | None:
    lease = leases.get(work.delivery_id, work.attempt)
    return lease.time_left if lease is not None else None


def _groups(works: Sequence[Work], spread: int = _GROUPS) -> list[Sequence[Work]]:
    """``works`` in consecutive groups that are each signed in one task and handed to the
    sender at once: ``spread`` groups (fewer when there are fewer works), each of at most
    :data:`_GROUP_MAX` (so more groups past ``spread x _GROUP_MAX`` works)."""
    size = min(_GROUP_MAX, max(1, -(-len(works) // spread)))
    return [works[start : start + size] for start in range(0, len(works), size)]


def _done(built: Sequence[Built]) -> Future[Sequence[Built]]:
    future: Future[Sequence[Built]] = Future()
    future.set_result(built)
    return future


def _build_all(works: Sequence[Work]) -> list[Built]:
    return [_build(work) for work in works]


def _build(work: Work) -> Built:
    """The request of one attempt, or why it cannot be built."""
    assert work.handler is not None  # only works with a handler are built
    try:
        return work.handler.backchannel_request(work.provider, work.session, work.context)
    except DeliveryError as exc:
        return exc
    except Exception as exc:  # noqa: BLE001 - a handler's bug fails its delivery only
        return _handler_failed(work, exc, "building the request")


def _handler_failed(work: Work, exc: Exception, step: str) -> PermanentDeliveryError:
    """What a handler raised other than a :class:`DeliveryError`: a permanent failure of
    this one delivery, never of its batch. Only the exception's type is logged and audited:
    its message may hold a token or an identifier."""
    kind = type(exc).__name__
    _log.warning(
        "protocol handler raised an unexpected exception; the delivery failed",
        delivery_id=work.delivery_id,
        protocol=work.provider.protocol,
        step=step,
        error=kind,
    )
    return PermanentDeliveryError(
        f"the {work.provider.protocol!r} protocol handler failed {step} ({kind}); "
        "not tried again: fix the handler or the provider session"
    )
