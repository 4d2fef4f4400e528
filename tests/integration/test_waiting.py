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
from orchestrator.store import make_engine
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


def test_notices_queued_in_a_transaction_go_out_at_its_commit_only(stack: Stack) -> None:
    """``within`` on PostgreSQL: nothing before the commit, nothing from a rollback."""
    settings = stack.settings()
    notifier = make_notifier(settings, NoticeBoard())
    engine = make_engine(settings.effective_database_url)
    listener = psycopg.connect(psycopg_conninfo(settings), autocommit=True)
    try:
        listener.execute(f'LISTEN "{pg_channel(settings)}"')
        with engine.connect() as conn, conn.begin() as transaction:
            assert notifier.within(conn, [("event:rolled-back", "")])
            transaction.rollback()
        with engine.begin() as conn:
            assert notifier.within(conn, [("event:e-1", ""), ("plan:p-1", "{}")])
            assert list(listener.notifies(timeout=0.3)) == [], "sent before the commit"
        got = [n.payload for n in listener.notifies(timeout=5, stop_after=2)]
        assert got == ["event:e-1", "plan:p-1\n{}"]
        assert list(listener.notifies(timeout=0.3)) == []
    finally:
        listener.close()
        engine.dispose()
        notifier.close()


def test_notices_of_other_backends_wait_for_the_commit(stack: Stack, tmp_path: Path) -> None:
    """Redis Pub/Sub (and in-process) notifiers cannot ride a database transaction."""
    stack.database_url = f"sqlite:///{tmp_path / 'shared.db'}"
    settings = stack.settings()
    notifier = make_notifier(settings, NoticeBoard())
    engine = make_engine(settings.effective_database_url)
    try:
        with engine.begin() as conn:
            assert notifier.within(conn, [("event:e-1", "")]) is False
    finally:
        engine.dispose()
        notifier.close()
