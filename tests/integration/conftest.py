"""Fixtures of the integration suite: a PostgreSQL database, a Redis namespace and a data dir
per test, real worker subprocesses, and their stderr shown when a test fails."""

from __future__ import annotations

import secrets
from collections.abc import Generator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pika
import pytest
import redis
from sqlalchemy import create_engine, text

from .servers import OwnRabbitmq, OwnRedis
from .support import (
    POSTGRES_URL,
    RABBITMQ_URL,
    REDIS_URL,
    WORKER_LOGS,
    Stack,
    psycopg_url,
    tail,
    tcp_reachable,
    unavailable,
)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the stderr of every worker the test started to a failed test's report."""
    report = yield
    if report.failed:
        for path in item.stash.get(WORKER_LOGS, []):
            try:
                content = path.read_text(encoding="utf-8", errors="replace")
            except OSError as exc:
                content = f"(unreadable: {exc})"
            report.sections.append((f"worker stderr {path.name} (tail)", tail(content)))
    return report


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    """A client on the test Redis database; skips (fails in CI) when Redis is down."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        unavailable("Redis", REDIS_URL, exc)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def namespace(redis_client: redis.Redis) -> Iterator[str]:
    """A fresh namespace (so fresh queues); its Redis keys are removed afterwards."""
    name = f"it{secrets.token_hex(6)}"
    yield name
    patterns = (f"dramatiq:{name}.*", f"dramatiq:__acks__.*.{name}.*")
    for pattern in patterns:
        keys = list(redis_client.scan_iter(match=pattern, count=1000))
        if keys:
            redis_client.delete(*keys)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A new, empty PostgreSQL database for this test, dropped (WITH FORCE) afterwards."""
    admin_url = psycopg_url(POSTGRES_URL)
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    name = f"lo_it_{secrets.token_hex(6)}"
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 - any failure to connect or create means "no server"
        admin.dispose()
        unavailable("PostgreSQL", POSTGRES_URL, exc)
    try:
        yield admin_url.set(drivername="postgresql", database=name).render_as_string(
            hide_password=False
        )
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def stack(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    postgres_url: str,
    namespace: str,
    redis_client: redis.Redis,
) -> Iterator[Stack]:
    """This test's isolated stack on Redis and PostgreSQL; its workers are stopped after."""
    logs: list[Path] = []
    request.node.stash[WORKER_LOGS] = logs
    world = Stack(
        tmp_path=tmp_path,
        database_url=postgres_url,
        broker_url=REDIS_URL,
        namespace=namespace,
        redis=redis_client,
        logs=logs,
    )
    try:
        yield world
    finally:
        world.close()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    """This test's own ``redis-server`` (no persistence), stopped afterwards."""
    server = OwnRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_rabbitmq(tmp_path: Path) -> Iterator[OwnRabbitmq]:
    """This test's own RabbitMQ node (own ports, own epmd), removed afterwards."""
    server = OwnRabbitmq(tmp_path / "rabbitmq")
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture
def world(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_url: str, own_redis: OwnRedis
) -> Iterator[Stack]:
    """A stack on this test's PostgreSQL database and its own Redis."""
    logs: list[Path] = []
    request.node.stash[WORKER_LOGS] = logs
    client = own_redis.client()
    stack = Stack(
        tmp_path=tmp_path,
        database_url=postgres_url,
        broker_url=own_redis.url,
        namespace=f"it{secrets.token_hex(6)}",
        redis=client,
        logs=logs,
        protocols=[],
    )
    try:
        yield stack
    finally:
        stack.close()
        client.close()


def _queues(namespace: str) -> list[str]:
    names = [f"{namespace}.events", f"{namespace}.deliveries"]
    return [f"{name}{suffix}" for name in names for suffix in ("", ".DQ", ".XQ")]


@pytest.fixture
def amqp_stack(stack: Stack) -> Iterator[Stack]:
    """The test's stack on RabbitMQ (a failure naming it when RabbitMQ does not answer)."""
    parts = urlsplit(RABBITMQ_URL)
    if not tcp_reachable(parts.hostname or "127.0.0.1", parts.port or 5672):
        unavailable("RabbitMQ", RABBITMQ_URL, ConnectionRefusedError("nothing answers"))
    stack.broker_url = RABBITMQ_URL
    stack.protocols = []  # no handler for "oidc": its delivery is skipped
    yield stack
    stack.close()  # stop the worker first, or it would declare the queues again
    connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
    try:
        channel = connection.channel()
        for queue in _queues(stack.namespace):
            channel.queue_delete(queue=queue)
    finally:
        connection.close()
