"""The IdP's wait for a plan and a completion, across processes: a real worker announces
them through PostgreSQL NOTIFY (PostgreSQL database) or Redis Pub/Sub (SQLite database)."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from orchestrator.notices import (
    NoticeBoard,
    make_notifier,
    notification_backend,
    pg_channel,
    psycopg_conninfo,
)
from orchestrator.waiting import Completion, LogoutWaiter, PlanWait

from .support import Stack, logout_event

pytestmark = pytest.mark.integration

#: Far above any wait here; reached only when no notification (and no re-read) came.
PATIENCE = 20.0


def _seed(stack: Stack) -> None:
    stack.seed(
        records=[
            {"kind": "session", "session_id": "s-1", "user_id": "alice"},
            {"kind": "session", "session_id": "s-2", "user_id": "alice"},
        ]
    )


async def _logout_and_wait(
    stack: Stack, waiter: LogoutWaiter, session_id: str
) -> tuple[str, PlanWait, Completion, float]:
    """Publish a logout with a plan id while already awaiting its plan and its completion."""
    event = logout_event(session_id)
    plan_id = event["plan_id"] = f"plan-{uuid.uuid4()}"
    plan = asyncio.create_task(waiter.await_plan(plan_id, PATIENCE))
    done = asyncio.create_task(waiter.await_completion(event["event_id"], PATIENCE))
    await asyncio.sleep(0.05)  # both are listening before the publish
    began = time.monotonic()
    with stack.publisher() as publisher:
        publisher.publish(event)
    got = await plan
    return plan_id, got, await done, time.monotonic() - began


def _check_waits(stack: Stack) -> None:
    with stack.runtime(handlers={}) as runtime:
        waiter = runtime.waiter()
        try:
            for session_id in ("s-1", "s-2"):
                plan_id, plan, done, waited = asyncio.run(
                    _logout_and_wait(stack, waiter, session_id)
                )
                assert not plan.timed_out
                assert plan.plan is not None
                assert plan.plan.plan_id == plan_id
                assert done.completed, done
                assert waited < PATIENCE / 2
            unknown = waiter.wait_plan("no-such-plan", 0.5)
            assert unknown.timed_out
        finally:
            waiter.close()


def test_waiting_over_postgres_notify(stack: Stack) -> None:
    """PostgreSQL database: the worker's NOTIFY wakes the waiting IdP process."""
    assert notification_backend(stack.settings()) == "postgresql"
    _seed(stack)
    stack.start_worker()
    _check_waits(stack)


def test_waiting_over_redis_pubsub(stack: Stack, tmp_path: Path) -> None:
    """SQLite database with the Redis broker: Redis Pub/Sub carries the notices."""
    sqlite = f"sqlite:///{tmp_path / 'shared.db'}"
    stack.database_url = sqlite
    assert notification_backend(stack.settings()) == "redis"
    _seed(stack)
    stack.start_worker()
    _check_waits(stack)


def test_notices_go_out_after_the_commit_on_their_own_connection(stack: Stack) -> None:
    """A notifier sends on its own connection, never in a transaction of the engine's (a
    NOTIFY there would hold PostgreSQL's global notify lock through every completing commit),
    and a notice it cannot send is logged, not raised into the logout."""
    settings = stack.settings()
    notifier = make_notifier(settings, NoticeBoard())
    listener = psycopg.connect(psycopg_conninfo(settings), autocommit=True)
    unreachable = make_notifier(
        settings.model_copy(update={"database_url": "postgresql://nobody@127.0.0.1:1/none"}),
        NoticeBoard(),
    )
    try:
        assert not hasattr(notifier, "within")
        listener.execute(f'LISTEN "{pg_channel(settings)}"')
        notifier([("event:e-1", ""), ("plan:p-1", "{}")])
        got = [n.payload for n in listener.notifies(timeout=5, stop_after=2)]
        assert got == ["event:e-1", "plan:p-1\n{}"]
        unreachable([("event:e-2", "")])  # logged: does not raise
    finally:
        listener.close()
        notifier.close()
        unreachable.close()
