"""The audit trail's hash chain on SQLite and PostgreSQL: ``audit verify`` names every
altered, deleted, inserted and reordered record and a forged checkpoint; ``audit export``
verifies offline with ``audit verify --file`` (and a tampered export does not); ``audit
purge`` keeps what remains verifiable; concurrent writers are chained in ``seq`` order."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from click.testing import CliRunner, Result
from sqlalchemy import Connection, Engine, RowMapping, event, select, text

from orchestrator import Runtime, Settings
from orchestrator.audit import AuditEntry, write_audit
from orchestrator.chain.canonical import GENESIS, chain_hash, record_hash
from orchestrator.chain.checking import verify_chain
from orchestrator.chain.checkpoints import CheckpointKeys, checkpoint_if_due, read_checkpoints
from orchestrator.chain.purging import purge_before
from orchestrator.chain.sealing import seal
from orchestrator.store.core import SEAL_LOCK_KEY, audit_links, audit_records
from orchestrator.store.engine import make_engine
from orchestrator.store.migrate import alembic_config, upgrade
from protocols.oidc import generate_key, load_key
from schemas import AuditType
from tests.integration.support import Stack, cli_env
from workers.cli import main

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
RECEIVED = AuditType.EVENT_RECEIVED
FORGED = "f0f0f0f0-0000-4000-8000-000000000000"


@pytest.fixture(params=["sqlite", "postgresql"])
def trail(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[dict[str, str], Engine]]:
    """Twelve records an hour apart, sealed, and a checkpoint of them (an export signs one);
    the CLI's environment and an engine to tamper with."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'trail.db'}"
    else:
        url = str(request.getfixturevalue("postgres_url"))
    settings = Settings.load(
        None, data_dir=tmp_path, database_url=url, broker_url="memory://", protocols=[]
    )
    runtime = Runtime.start(settings, handlers={})
    try:
        for n in range(12):
            with runtime.database.begin() as db:
                entry = AuditEntry(f"n-{n}", RECEIVED, "accepted", session_id=f"s-{n}")
                write_audit(db, [entry], at=T0 + timedelta(hours=n))
    finally:
        runtime.close()
    env = cli_env(tmp_path, url)
    generate_key(tmp_path / "oidc-keys")  # what a worker's start does (commands never do)
    assert _run(env, "export", "-o", str(tmp_path / "first.jsonl")).exit_code == 0
    engine = make_engine(url)
    try:
        yield env, engine
    finally:
        engine.dispose()


def _run(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(main, ["audit", *args], env=env)


def _verify(env: dict[str, str], *args: str) -> tuple[int, dict[str, Any]]:
    result = _run(env, "verify", "--json", *args)
    return result.exit_code, json.loads(result.stdout)


def _findings(env: dict[str, str], *args: str) -> list[tuple[str, int | None, str | None]]:
    status, report = _verify(env, *args)
    assert status == (0 if report["ok"] else 9)
    return [(f["kind"], f["position"], f["record_id"]) for f in report["findings"]]


def _rows(db: Connection) -> list[RowMapping]:
    """Every sealed record with its link, typed (timestamps aware, detail an object), in
    chain order."""
    link = audit_links.c
    statement = (
        select(audit_records, link.chain_seq, link.record_hash, link.prev_hash, link.chain_hash)
        .join(audit_links, link.seq == audit_records.c.seq)
        .order_by(link.chain_seq)
    )
    return list(db.execute(statement).mappings().all())


def _ids(engine: Engine) -> dict[int, str]:
    with engine.connect() as db:
        rows = db.execute(
            text(
                "SELECT l.chain_seq, r.id FROM audit_links l JOIN audit_records r "
                "ON r.seq = l.seq ORDER BY l.chain_seq"
            )
        )
        return {int(row.chain_seq): str(row.id) for row in rows}


def _at(position: int) -> str:
    """The ``seq`` of the record at a chain position, in SQL."""
    return f"(SELECT seq FROM audit_links WHERE chain_seq = {position})"


def _tamper(engine: Engine, *statements: str) -> None:
    with engine.begin() as db:
        for statement in statements:
            db.execute(text(statement))


def _move(engine: Engine, source: int, target: int) -> str:
    return f"UPDATE audit_links SET chain_seq = {target} WHERE chain_seq = {source}"


def test_an_untouched_trail_verifies(trail: tuple[dict[str, str], Engine]) -> None:
    env, _ = trail
    result = _run(env, "verify")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "verified 12 records (positions 1 to 12) and 1 signed checkpoint: the chain is intact\n"
    )


def test_an_altered_record_is_named(trail: tuple[dict[str, str], Engine]) -> None:
    env, engine = trail
    ids = _ids(engine)
    _tamper(engine, f"UPDATE audit_records SET outcome = 'rejected' WHERE seq = {_at(4)}")
    assert _findings(env) == [("altered", 4, ids[4])]
    result = _run(env, "verify")
    assert result.exit_code == 9
    assert f"altered: record {ids[4]} at position 4: its content does not hash" in result.stdout


def test_a_record_rehashed_after_altering_is_named(trail: tuple[dict[str, str], Engine]) -> None:
    """Changing a record and its record_hash breaks its chain hash; rewriting every chain hash
    from there on is caught by the signed checkpoint."""
    env, engine = trail
    ids = _ids(engine)
    with engine.begin() as db:
        rows = _rows(db)
        prev = rows[2]["chain_hash"]
        for row in rows[3:]:
            own = record_hash({**row, "key": row["dedupe_key"], "outcome": "rejected"})
            linked = chain_hash(prev, own)
            db.execute(
                text("UPDATE audit_records SET outcome = 'rejected' WHERE seq = :seq"),
                {"seq": row["seq"]},
            )
            db.execute(
                text(
                    "UPDATE audit_links SET record_hash = :own, prev_hash = :prev, "
                    "chain_hash = :linked WHERE seq = :seq"
                ),
                {"own": own, "prev": prev, "linked": linked, "seq": row["seq"]},
            )
            prev = linked
    assert _findings(env) == [("altered", 12, ids[12])]


@pytest.mark.parametrize("link", ["kept", "deleted too"])
def test_a_deleted_record_is_named(trail: tuple[dict[str, str], Engine], link: str) -> None:
    """Whether its link is left behind or deleted with it."""
    env, engine = trail
    ids = _ids(engine)
    statements = [f"DELETE FROM audit_records WHERE seq = {_at(6)}"]
    if link == "deleted too":
        statements.append("DELETE FROM audit_links WHERE chain_seq = 6")
    _tamper(engine, *statements)
    assert _findings(env) == [("deleted", 7, ids[7])]
    assert "the record at position 6 is empty" in _run(env, "verify").stdout


def test_deleted_and_renumbered_records_are_named(trail: tuple[dict[str, str], Engine]) -> None:
    """Closing the gap leaves the broken link, and the checkpoint counts one record more."""
    env, engine = trail
    ids = _ids(engine)
    _tamper(
        engine,
        f"DELETE FROM audit_records WHERE seq = {_at(6)}",
        "DELETE FROM audit_links WHERE chain_seq = 6",
        "UPDATE audit_links SET chain_seq = chain_seq + 100 WHERE chain_seq > 6",
        "UPDATE audit_links SET chain_seq = chain_seq - 101 WHERE chain_seq > 100",
    )
    assert _findings(env) == [("deleted", 6, ids[7]), ("deleted", 12, None)]


def test_deleted_first_and_last_records_are_named(trail: tuple[dict[str, str], Engine]) -> None:
    env, engine = trail
    _tamper(
        engine,
        "DELETE FROM audit_records WHERE seq IN "
        "(SELECT seq FROM audit_links WHERE chain_seq IN (1, 11, 12))",
    )
    _, report = _verify(env)
    problems = [f["problem"] for f in report["findings"]]
    assert [f["kind"] for f in report["findings"]] == ["deleted", "deleted"]
    assert problems[0].startswith(
        "the record at position 1 is missing: the trail starts at position 2"
    )
    assert problems[1].startswith("the records at positions 11 to 12 are missing: checkpoint")


def test_an_inserted_record_is_named(trail: tuple[dict[str, str], Engine]) -> None:
    """A forged record with consistent hashes, linked after position 5 and the rest moved
    up: nothing links to it and the next record follows the one before it."""
    env, engine = trail
    with engine.begin() as db:
        before = _rows(db)[4]
        forged = {
            **{name: before[name] for name in ("at", "type", "outcome", "session_id")},
            "id": FORGED,
            "dedupe_key": "forged",
            "detail": {"n": 1},
        }
        own = record_hash({**forged, "key": "forged"})
        db.execute(text("UPDATE audit_links SET chain_seq = chain_seq + 100 WHERE chain_seq > 5"))
        db.execute(text("UPDATE audit_links SET chain_seq = chain_seq - 99 WHERE chain_seq > 100"))
        seq = db.scalar(audit_records.insert().values(**forged).returning(audit_records.c.seq))
        db.execute(
            audit_links.insert().values(
                chain_seq=6,
                seq=seq,
                record_hash=own,
                prev_hash=before["chain_hash"],
                chain_hash=chain_hash(before["chain_hash"], own),
            )
        )
    found = _findings(env)
    assert ("inserted", 6, FORGED) in found
    assert {kind for kind, _, _ in found} == {"inserted"}  # the checkpoint's record moved up


def test_reordered_records_are_named(trail: tuple[dict[str, str], Engine]) -> None:
    env, engine = trail
    ids = _ids(engine)
    _tamper(engine, _move(engine, 3, -3), _move(engine, 8, 3), _move(engine, -3, 8))
    found = _findings(env)
    assert {kind for kind, _, _ in found} == {"reordered"}
    assert ("reordered", 3, ids[8]) in found
    assert ("reordered", 8, ids[3]) in found


def test_a_round_reads_the_unsealed_records_by_seq_alone(
    trail: tuple[dict[str, str], Engine],
) -> None:
    """The records to seal are a range of ``seq`` after the head's record: no statement that
    reads them asks the links (PostgreSQL answered a ``NOT EXISTS`` against them by hashing
    every link of the trail, for every page)."""
    _, engine = trail
    with engine.begin() as db:
        write_audit(db, [AuditEntry(f"late-{n}", RECEIVED, "accepted") for n in range(3)])
    reads: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM audit_records" in statement:
            reads.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        assert seal(engine) == 3
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert reads, "the round read no records"
    assert not [statement for statement in reads if "audit_links" in statement]


def test_a_forged_checkpoint_is_named(trail: tuple[dict[str, str], Engine]) -> None:
    """Columns that differ from the JWS, and a JWS signed with another key."""
    env, engine = trail
    _tamper(engine, "UPDATE audit_checkpoints SET count = 3")
    status, report = _verify(env)
    assert status == 9
    [finding] = report["findings"]
    assert finding["kind"] == "forged checkpoint"
    assert finding["problem"].endswith("its columns differ from what its JWS signs: count")
    assert report["checkpoints"] == 0


def test_export_verifies_offline_and_a_tampered_export_does_not(
    trail: tuple[dict[str, str], Engine], tmp_path: Path
) -> None:
    env, _ = trail
    jwks = tmp_path / "jwks.json"
    keys = CliRunner().invoke(main, ["keys", "jwks"], env=env)
    jwks.write_text(keys.stdout)
    offline = {**env, "LOGOUT_DATABASE_URL": "sqlite:////nonexistent/never.db"}
    for fmt in ("jsonl", "csv"):
        path = tmp_path / f"trail.{fmt}"
        exported = _run(env, "export", "--format", fmt, "-o", str(path))
        assert exported.exit_code == 0, exported.output
        assert exported.stderr == "exported 12 records\n"
        status, report = _verify(offline, "--file", str(path), "--jwks", str(jwks))
        assert (status, report["records"], report["checkpoints"]) == (0, 12, 1)
        text_of = path.read_text()
        path.write_text(text_of.replace("s-7", "s-8", 1))
        status, report = _verify(offline, "--file", str(path), "--jwks", str(jwks))
        assert status == 9
        assert [(f["kind"], f["position"]) for f in report["findings"]] == [("altered", 8)]


def test_export_since_until_is_a_stretch_that_verifies(
    trail: tuple[dict[str, str], Engine], tmp_path: Path
) -> None:
    env, _ = trail
    path = tmp_path / "part.jsonl"
    since, until = (T0 + timedelta(hours=3)).isoformat(), (T0 + timedelta(hours=9)).isoformat()
    result = _run(env, "export", "--since", since, "--until", until, "-o", str(path))
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["chain_seq"] for line in lines if line["kind"] == "record"] == list(range(4, 10))
    status, report = _verify(env, "--file", str(path))
    assert (status, report["first"], report["last"]) == (0, 4, 9)
    bad = _run(env, "export", "--until", "yesterday")
    assert bad.exit_code == 2
    assert "'--until'" in bad.stderr


def test_purge_keeps_what_remains_verifiable(trail: tuple[dict[str, str], Engine]) -> None:
    env, engine = trail
    before = (T0 + timedelta(hours=5)).isoformat()
    result = _run(env, "purge", "--before", before, "--actor", "ops")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("purged 5 records (positions up to 5) written before")
    assert lines[1] == (
        "what remains: verified 8 records (positions 6 to 13) and 2 signed checkpoints: "
        "the chain is intact"
    )
    with engine.connect() as db:
        purged = db.execute(
            text("SELECT detail FROM audit_records WHERE type = 'audit.purged'")
        ).scalar_one()
    detail = json.loads(purged) if isinstance(purged, str) else purged
    assert (detail["deleted"], detail["through_position"], detail["actor"]) == (5, 5, "ops")
    assert _findings(env) == []
    again = _run(env, "purge", "--before", T0.isoformat())
    assert again.stdout.startswith("nothing to purge")


def test_purge_refuses_a_time_in_the_future(trail: tuple[dict[str, str], Engine]) -> None:
    """`--before 2099-01-01` would purge every record, those still being written included."""
    env, engine = trail
    result = _run(env, "purge", "--before", "2099-01-01", "--actor", "ops")
    assert result.exit_code == 2, result.output
    assert "'--before'" in result.stderr
    assert "'2099-01-01' is in the future" in result.stderr
    assert len(_ids(engine)) == 12


def test_purge_refuses_a_trail_that_does_not_verify(trail: tuple[dict[str, str], Engine]) -> None:
    env, engine = trail
    _tamper(engine, f"UPDATE audit_records SET outcome = 'x' WHERE seq = {_at(2)}")
    result = _run(env, "purge", "--before", (T0 + timedelta(hours=5)).isoformat())
    assert result.exit_code == 9
    assert "refused: nothing was purged" in result.stderr
    assert len(_ids(engine)) == 12


def _keys(env: dict[str, str]) -> CheckpointKeys:
    """The key the fixture put where the workers keep theirs."""
    [pem] = (Path(env["LOGOUT_DATA_DIR"]) / "oidc-keys").glob("*.pem")
    key = load_key(pem)
    return CheckpointKeys(key, {"keys": [key.public_jwk()]})


def test_a_record_hidden_below_the_head_is_named(trail: tuple[dict[str, str], Engine]) -> None:
    """A record inserted with no link into a gap of ``seq`` below the last sealed record: the
    sealer never links it (it goes on after the head), so verify names it, every time, and a
    purge refuses the trail."""
    env, engine = trail
    with engine.begin() as db:
        sixth = _rows(db)[5]
        db.execute(
            text(
                "UPDATE audit_records SET seq = seq + 100 "
                "WHERE seq IN (SELECT seq FROM audit_links WHERE chain_seq > 6)"
            )
        )
        db.execute(text("UPDATE audit_links SET seq = seq + 100 WHERE chain_seq > 6"))
        db.execute(
            audit_records.insert().values(
                **{name: sixth[name] for name in ("at", "type", "outcome", "session_id")},
                id=FORGED,
                seq=sixth["seq"] + 50,
                dedupe_key="hidden",
                detail={},
            )
        )
    problem = (
        f"not part of the chain: a record with no link (seq {sixth['seq'] + 50}) "
        "below records already sealed, where the sealer never links one"
    )
    for _ in range(2):
        status, report = _verify(env)
        assert (status, report["findings"]) == (
            9,
            [{"kind": "inserted", "position": None, "record_id": FORGED, "problem": problem}],
        )
    refused = _run(env, "purge", "--before", (T0 + timedelta(hours=5)).isoformat())
    assert refused.exit_code == 9
    assert f"inserted: record {FORGED}: {problem}" in refused.stderr


def test_purge_before_verifies_in_its_own_transaction(
    trail: tuple[dict[str, str], Engine],
) -> None:
    """Called directly (not through the command), a purge of a tampered trail deletes and
    signs nothing, and says what it found."""
    env, engine = trail
    _tamper(engine, f"UPDATE audit_records SET outcome = 'x' WHERE seq = {_at(2)}")
    with engine.connect() as db:
        before = len(read_checkpoints(db))
    done = purge_before(engine, _keys(env), "https://idp.example", T0 + timedelta(hours=5), None)
    assert (done.deleted, done.checkpoint) == (0, None)
    assert done.refused is not None
    assert [(f.kind, f.position) for f in done.refused.findings] == [("altered", 2)]
    assert len(_ids(engine)) == 12
    with engine.connect() as db:
        assert len(read_checkpoints(db)) == before


def test_a_worker_round_skips_while_another_holds_the_seal_lock(
    postgres_url: str, tmp_path: Path
) -> None:
    """A worker's round (``wait=False``) and its checkpoint check return at once while
    another transaction holds the seal lock, sealing and signing nothing; the next round
    after it is released seals. (A round that waited would still be blocked at the join.)"""
    settings = Settings.load(
        None, data_dir=tmp_path, database_url=postgres_url, broker_url="memory://", protocols=[]
    )
    runtime = Runtime.start(settings, handlers={})
    keys = CheckpointKeys(generate_key(tmp_path / "keys"), {"keys": []})
    try:
        with runtime.database.begin() as db:
            write_audit(db, [AuditEntry(f"h{n}", RECEIVED, "accepted") for n in range(3)])
        done: list[object] = []

        def round_() -> None:
            done.append(seal(runtime.engine, wait=False))
            done.append(checkpoint_if_due(runtime.engine, lambda: keys, settings.issuer, 0.0))

        with runtime.engine.begin() as holder:
            holder.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SEAL_LOCK_KEY})
            worker = threading.Thread(target=round_)
            worker.start()
            worker.join(60)
            blocked = worker.is_alive()
        worker.join()
        assert (blocked, done) == (False, [0, None])
        assert seal(runtime.engine, wait=False) == 3
    finally:
        runtime.close()


def test_concurrent_writers_are_chained_in_seq_order(postgres_url: str, tmp_path: Path) -> None:
    """Writers in eight threads never wait for a sealer that runs all along; every record ends
    in the chain once, in seq order, and the chain verifies."""
    settings = Settings.load(
        None, data_dir=tmp_path, database_url=postgres_url, broker_url="memory://", protocols=[]
    )
    runtime = Runtime.start(settings, handlers={})
    stop = threading.Event()

    def write(worker: int) -> None:
        for n in range(40):
            with runtime.database.begin() as db:
                write_audit(db, [AuditEntry(f"w{worker}-{n}", RECEIVED, "accepted")])

    def sealing() -> None:
        while not stop.is_set():
            seal(runtime.engine)

    sealer = threading.Thread(target=sealing)
    sealer.start()
    writers = [threading.Thread(target=write, args=(w,)) for w in range(8)]
    try:
        for thread in writers:
            thread.start()
        for thread in writers:
            thread.join()
    finally:
        stop.set()
        sealer.join()
    seal(runtime.engine)
    with runtime.engine.connect() as db:
        rows = db.execute(
            text(
                "SELECT r.seq, l.chain_seq FROM audit_records r "
                "LEFT JOIN audit_links l ON l.seq = r.seq ORDER BY r.seq"
            )
        ).all()
    runtime.close()
    assert [row.chain_seq for row in rows] == list(range(1, 321))
    generate_key(tmp_path / "oidc-keys")
    assert _findings(cli_env(tmp_path, postgres_url)) == []


@pytest.fixture(params=["sqlite", "postgresql"])
def unmigrated(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An engine on a database without our schema yet, on each backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'm.db'}"
    else:
        url = str(request.getfixturevalue("postgres_url"))
    engine = make_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


def test_migration_0010_up_and_down_and_older_records_are_hashed_when_sealed(
    unmigrated: Engine,
) -> None:
    """Records written before 0010 get their record hash from the sealer; the downgrade drops
    the columns and the checkpoints' table."""
    engine = unmigrated
    upgrade(engine, "0009_remember_device")
    old = {"id": "old-1", "dedupe_key": "old-1", "at": T0, "type": "event.received"}
    with engine.begin() as db:
        db.execute(audit_records.insert().values(**old, outcome="accepted", detail={}))
    upgrade(engine)
    assert seal(engine) == 1
    with engine.connect() as db:
        [row] = _rows(db)
    assert row["record_hash"] == record_hash({**row, "key": "old-1"})
    assert row["chain_seq"] == 1
    with engine.connect() as connection:
        command.downgrade(alembic_config(connection), "0009_remember_device")
        connection.commit()
    with engine.connect() as db:
        columns = db.execute(text("SELECT * FROM audit_records")).mappings().one().keys()
        assert "chain_hash" not in columns
        assert "record_hash" not in columns
    upgrade(engine)


_CHAIN_COLUMNS = "seq, chain_seq, record_hash, prev_hash, chain_hash"


def test_migration_0014_carries_every_link_over_and_back(unmigrated: Engine) -> None:
    """Links the sealer wrote into the records' own columns before 0014 move to
    ``audit_links`` as they were: the chain verifies across the upgrade, new records are
    chained after them, and the downgrade carries every link back into its record."""
    engine = unmigrated
    upgrade(engine, "0013_redundant_indexes")
    with engine.begin() as db:
        for n in range(3):
            key = f"old-{n}"
            at = T0 + timedelta(hours=n)
            values = {"id": key, "dedupe_key": key, "at": at, "type": "event.received"}
            db.execute(audit_records.insert().values(**values, outcome="ok", detail={"n": n}))
        prev = GENESIS
        for position, row in enumerate(db.execute(select(audit_records)).mappings(), 1):
            own = record_hash({**row, "key": row["dedupe_key"]})
            linked = chain_hash(prev, own)
            db.execute(  # what the sealer wrote before 0014
                text(
                    "UPDATE audit_records SET chain_seq = :position, record_hash = :own, "
                    "prev_hash = :prev, chain_hash = :linked WHERE seq = :seq"
                ),
                {"position": position, "own": own, "prev": prev, "linked": linked,
                 "seq": row["seq"]},
            )  # fmt: skip
            prev = linked
        before = db.execute(text(f"SELECT {_CHAIN_COLUMNS} FROM audit_records ORDER BY seq")).all()
    upgrade(engine)
    with engine.connect() as db:
        moved = db.execute(text(f"SELECT {_CHAIN_COLUMNS} FROM audit_links ORDER BY seq"))
        assert moved.all() == before
    with engine.begin() as db:
        write_audit(db, [AuditEntry(f"new-{n}", RECEIVED, "accepted") for n in range(2)])
    assert seal(engine) == 2
    with engine.connect() as db:
        verified = verify_chain(db, {"keys": []})
        after = db.execute(text(f"SELECT {_CHAIN_COLUMNS} FROM audit_links ORDER BY seq"))
        links = after.all()
    assert (verified.records, verified.last, verified.findings) == (5, 5, [])
    assert links[:3] == before
    with engine.connect() as connection:
        command.downgrade(alembic_config(connection), "0013_redundant_indexes")
        connection.commit()
    with engine.connect() as db:
        back = db.execute(text(f"SELECT {_CHAIN_COLUMNS} FROM audit_records ORDER BY seq"))
        assert back.all() == links
    upgrade(engine)


def test_running_workers_seal_and_sign(stack: Stack) -> None:
    """Two real workers seal every 0.2 s and sign every 0.5 s while records are written: every
    record ends in the chain once, checkpoints are signed, and the chain verifies."""
    settings = {"LOGOUT_AUDIT_SEAL_INTERVAL": "200ms", "LOGOUT_AUDIT_CHECKPOINT_INTERVAL": "0.5s"}
    first, second = stack.start_worker(settings), stack.start_worker(settings)
    stack.wait_for(
        lambda: "worker started" in first.output() and "worker started" in second.output(),
        what="both workers to start",
    )
    with stack.runtime(handlers={}) as runtime:
        for n in range(60):
            with runtime.database.begin() as db:
                write_audit(db, [AuditEntry(f"k{n}-{m}", RECEIVED, "accepted") for m in range(3)])

    def sealed() -> bool:
        with stack.engine.connect() as db:
            unsealed = db.scalar(
                text(
                    "SELECT count(*) FROM audit_records r "
                    "WHERE NOT EXISTS (SELECT 1 FROM audit_links l WHERE l.seq = r.seq)"
                )
            )
            signed = db.scalar(text("SELECT max(count) FROM audit_checkpoints"))
        return bool(unsealed == 0 and signed == 180)

    stack.wait_for(sealed, what="180 records sealed and signed by the workers", timeout=60)
    result = stack.cli("audit", "verify", "--json")
    report = json.loads(result.stdout)
    assert (result.returncode, report["records"], report["findings"]) == (0, 180, [])
    assert report["checkpoints"] >= 1
