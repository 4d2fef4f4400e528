"""The chain's parts: the canonical form (pinned), the verifier's explanations, checkpoint
signatures, export reading, the worker's upkeep, and the documented offline procedure."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from click.testing import CliRunner
from sqlalchemy import text

from orchestrator import Runtime, Settings
from orchestrator.audit import AuditEntry, write_audit
from orchestrator.chain.canonical import GENESIS, canonical_form, chain_hash, record_hash
from orchestrator.chain.checkpoints import (
    CHECKPOINT_TYPE,
    Checkpoint,
    CheckpointKeys,
    checkpoint_if_due,
    read_checkpoints,
    signature_problem,
    write_checkpoint,
)
from orchestrator.chain.exporting import read_export
from orchestrator.chain.verifying import ChainVerifier, Owner
from orchestrator.errors import InputError
from orchestrator.store.engine import make_engine
from protocols.base import HostInfo
from protocols.oidc import OidcHandler, generate_key
from protocols.oidc.settings import OidcSettings
from schemas import AuditType
from workers.chain_upkeep import ChainUpkeep
from workers.cli import main
from workers.exit_codes import ExitCode

DOCS = Path(__file__).parents[2] / "docs" / "chain.md"
AT = datetime(2026, 1, 31, 12, 0, 0, 250000, tzinfo=UTC)


def test_the_canonical_form_is_pinned() -> None:
    """Sorted keys, no whitespace, UTF-8 as itself, UTC with microseconds and Z, null."""
    fields = {
        "id": "r-1",
        "at": AT,
        "type": "event.received",
        "outcome": "accepted",
        "key": "event.received:e-1",
        "event_id": "e-1",
        "user_id": None,
        "session_id": "s-1",
        "provider": None,
        "detail": {"b": [1, 2.5], "a": "é"},
    }
    assert (
        canonical_form(fields)
        == (
            '{"at":"2026-01-31T12:00:00.250000Z","detail":{"a":"é","b":[1,2.5]},"event_id":"e-1",'
            '"id":"r-1","key":"event.received:e-1","outcome":"accepted","provider":null,'
            '"session_id":"s-1","type":"event.received","user_id":null}'
        ).encode()
    )
    offset = {**fields, "at": AT.astimezone(UTC).replace(tzinfo=UTC)}
    assert record_hash(offset) == record_hash({**fields, "at": "2026-01-31T12:00:00.250000Z"})
    assert chain_hash(GENESIS, "ab") == chain_hash("0" * 64, "ab")


def _link(position: int, prev: str, name: str) -> dict[str, Any]:
    fields = {"id": name, "at": AT, "type": "t", "outcome": "o", "key": name, "detail": {}}
    own = record_hash(fields)
    return {**fields, "chain_seq": position, "record_hash": own, "prev_hash": prev,
            "chain_hash": chain_hash(prev, own)}  # fmt: skip


class _Lookups:
    """The look-ups over a list of records (the database and the export do the same)."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    def owners(self, hashes: set[str]) -> dict[str, Owner]:
        return {r["chain_hash"]: Owner(r["chain_seq"], r["id"]) for r in self.rows
                if r["chain_hash"] in hashes}  # fmt: skip

    def followed(self, hashes: set[str]) -> set[str]:
        return {r["prev_hash"] for r in self.rows if r["prev_hash"] in hashes}


def _chain(count: int) -> list[dict[str, Any]]:
    rows, prev = [], GENESIS
    for position in range(1, count + 1):
        rows.append(_link(position, prev, f"r{position}"))
        prev = rows[-1]["chain_hash"]
    return rows


def _findings(rows: list[dict[str, Any]]) -> list[tuple[str, int | None, str | None]]:
    verifier = ChainVerifier([], {})
    for row in rows:
        verifier.feed(row)
    return [(f.kind, f.position, f.record_id) for f in verifier.finish(_Lookups(rows))]


def test_an_inserted_record_with_a_made_up_link_is_named_once() -> None:
    """A record that follows no record, between two that follow each other: inserted, not
    a deletion before it."""
    rows = _chain(5)
    forged = _link(3, "f" * 64, "forged")
    tampered = rows[:2] + [forged] + [{**r, "chain_seq": r["chain_seq"] + 1} for r in rows[2:]]
    assert _findings(tampered) == [("inserted", 3, "forged")]


def test_adjacent_records_swapped_are_reordered_not_inserted() -> None:
    rows = _chain(5)
    swapped = [rows[0], rows[2], rows[1], rows[3], rows[4]]
    for position, row in enumerate(swapped, start=1):
        row["chain_seq"] = position
    found = _findings(swapped)
    assert {kind for kind, _, _ in found} == {"reordered"}
    assert ("reordered", 2, "r3") in found


def test_a_record_with_empty_chain_columns_is_altered() -> None:
    rows = _chain(3)
    rows[1] = {**rows[1], "record_hash": None}
    assert ("altered", 2, "r2") in _findings(rows)


def _signed(claims: dict[str, Any], key: Any, kid: str, typ: str = CHECKPOINT_TYPE) -> str:
    return jwt.encode(claims, key.private_key, algorithm=key.alg, headers={"typ": typ, "kid": kid})


def test_checkpoint_signatures(tmp_path: Path) -> None:
    """Verified with the JWKS; another key under the same kid, an unknown kid, another typ
    and columns that differ from the claims are each named."""
    key = generate_key(tmp_path / "keys", "ES256")
    other = generate_key(tmp_path / "other", "ES256")
    jwks = {"keys": [key.public_jwk()]}
    base = Checkpoint("c-1", AT, 3, "a" * 64, "interval", "")
    claims = base.claims("http://idp")
    good = Checkpoint(**{**_fields(base), "jws": _signed(claims, key, key.kid)})
    assert signature_problem(good, jwks) is None
    cases = {
        _signed(claims, other, key.kid): f"its signature does not verify with key '{key.kid}'",
        _signed(claims, key, "nope"): "it is signed with key 'nope', which the JWKS does not hold",
        _signed(claims, key, key.kid, "x"): "its JWS is not a checkpoint (typ 'x')",
        "not a jws": "its JWS is not a JWS",
    }
    for jws, problem in cases.items():
        assert signature_problem(Checkpoint(**{**_fields(base), "jws": jws}), jwks) == problem
    moved = Checkpoint(**{**_fields(good), "count": 4})
    assert signature_problem(moved, jwks) == "its columns differ from what its JWS signs: count"


def _fields(checkpoint: Checkpoint) -> dict[str, Any]:
    return {name: getattr(checkpoint, name) for name in Checkpoint.__slots__}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json\n", "x.jsonl:1: not JSON: give a file `audit export` wrote"),
        ('{"kind": "row"}\n', "x.jsonl:1: unknown kind 'row': export, checkpoint or record"),
        ('{"kind": "record", "chain_seq": 1}\n', "x.jsonl:1: a record line without at, detail"),
        ("[1]\n", "x.jsonl:1: not a JSON object: give a file `audit export` wrote"),
        ("", "x.jsonl: empty, so not an export (one starts with its export line)"),
        ("\n\n", "x.jsonl: empty, so not an export (one starts with its export line)"),
        ('{"kind": "checkpoint", "id": "c", "at": "2026-01-31T12:00:00Z", "count": 1, '
         '"head_hash": "h", "reason": "interval", "jws": "j"}\n',
         "x.jsonl:1: no export line first: give a file `audit export` wrote"),
        ('{"kind": "export"}\n{"kind": "export"}\n',
         "x.jsonl:2: a second export line: give one file `audit export` wrote"),
        ("kind,chain_seq\n", "x.jsonl: empty, so not an export"),
    ],
)  # fmt: skip
def test_a_file_that_is_no_export_is_refused_naming_the_line(
    text: str, problem: str, tmp_path: Path
) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text(text)
    with path.open() as handle, pytest.raises(InputError) as refused:
        list(read_export("x.jsonl", handle))
    assert str(refused.value.problems[0]).startswith(problem)


def _oidc_handler(settings: Settings, key: Path) -> OidcHandler:
    """A started OIDC handler signing with ``key``: its settings are not ``settings``'s."""
    host = HostInfo(issuer=settings.issuer, data_dir=settings.data_dir)
    handler = OidcHandler(OidcSettings(key_files=[key]), host)
    handler.start()
    return handler


def test_the_upkeep_seals_and_signs_when_due(settings: Settings, tmp_path: Path) -> None:
    """The first run seals and signs with the runtime's own OIDC handler's key (no second
    handler is built: nothing is generated into the data directory); within the interval, or
    with nothing new, no checkpoint; that handler's JWKS verifies it."""
    key = generate_key(tmp_path / "managed")
    handler = _oidc_handler(settings, Path(key.source))
    runtime = Runtime.start(settings, handlers={"oidc": handler})
    try:
        with runtime.database.begin() as db:
            write_audit(db, [AuditEntry(f"k{n}", AuditType.EVENT_RECEIVED, "ok") for n in range(3)])
        upkeep = ChainUpkeep(runtime)
        upkeep.run()
        with runtime.engine.connect() as db:
            [first] = read_checkpoints(db)
        assert (first.count, first.reason) == (3, "interval")
        assert jwt.get_unverified_header(first.jws)["kid"] == key.kid
        assert not (settings.data_dir / "oidc-keys").exists()
        keys = upkeep.keys()
        assert keys is not None
        assert signature_problem(first, handler.keys.jwks()) is None
        with runtime.database.begin() as db:
            write_audit(db, [AuditEntry("k9", AuditType.EVENT_RECEIVED, "ok")])
        upkeep.run()
        assert checkpoint_if_due(runtime.engine, lambda: keys, settings.issuer, 3600.0) is None
        assert checkpoint_if_due(runtime.engine, lambda: keys, settings.issuer, 0.001) is not None
        assert checkpoint_if_due(runtime.engine, lambda: keys, settings.issuer, 0.001) is None
        with runtime.engine.connect() as db:
            assert [cp.count for cp in read_checkpoints(db)] == [3, 4]
    finally:
        runtime.close()


def test_a_worker_without_the_oidc_handler_seals_and_signs_nothing(settings: Settings) -> None:
    runtime = Runtime.start(settings, handlers={})
    try:
        with runtime.database.begin() as db:
            write_audit(db, [AuditEntry("k1", AuditType.EVENT_RECEIVED, "ok")])
        upkeep = ChainUpkeep(runtime)
        upkeep.run()
        with runtime.engine.connect() as db:
            assert read_checkpoints(db) == []
            sealed = db.scalar(text("SELECT chain_seq FROM audit_links"))
        assert (sealed, upkeep.keys()) == (1, None)
        assert not (settings.data_dir / "oidc-keys").exists()
    finally:
        runtime.close()


def _trail_env(
    settings: Settings, tmp_path: Path, entries: list[AuditEntry], at: datetime = AT
) -> dict[str, str]:
    """Write ``entries`` to the trail at ``at``; the environment the CLI reads it with."""
    runtime = Runtime.start(settings, handlers={})
    try:
        with runtime.database.begin() as db:
            write_audit(db, entries, at=at)
    finally:
        runtime.close()
    return {
        "LOGOUT_DATA_DIR": str(tmp_path),
        "LOGOUT_DATABASE_URL": settings.effective_database_url,
        "LOGOUT_BROKER_URL": "memory://",
        "LOGOUT_LOG_LEVEL": "WARNING",
    }


def test_the_commands_never_generate_a_key(settings: Settings, tmp_path: Path) -> None:
    """On a data directory without keys: `audit verify` and `purge` are configuration errors
    naming the fix (exit 6), `export` exports and says nothing signed it; no key is written.
    With the workers' key there, `verify` verifies their checkpoints and generates none."""
    env = _trail_env(settings, tmp_path, [AuditEntry("k1", AuditType.EVENT_RECEIVED, "ok")])

    def run(*args: str) -> Any:
        return CliRunner().invoke(main, ["audit", *args], env=env)

    verified = run("verify")
    assert verified.exit_code == 6, verified.output
    assert "no OIDC signing key to verify the checkpoints with" in verified.stderr
    assert "give --jwks JWKS (what `keys jwks` prints where the workers run)" in verified.stderr
    assert "Traceback" not in verified.output
    purged = run("purge", "--before", "2026-02-01")
    assert purged.exit_code == 6
    assert "no OIDC signing key to sign the purge's checkpoint with" in purged.stderr
    exported = run("export", "-o", str(tmp_path / "trail.jsonl"))
    assert exported.exit_code == 0
    assert "no checkpoint was signed for this export" in exported.stderr
    assert not (tmp_path / "oidc-keys").exists()
    key = generate_key(tmp_path / "oidc-keys")
    signed = _oidc_handler(settings, Path(key.source))
    engine = make_engine(settings.effective_database_url)
    try:
        with engine.begin() as conn:
            keys = CheckpointKeys(key, signed.keys.jwks())
            write_checkpoint(conn, keys, settings.issuer, "interval")
    finally:
        engine.dispose()
    verified = run("verify")
    assert verified.stdout == (
        "verified 1 records (positions 1 to 1) and 1 signed checkpoint: the chain is intact\n"
    )
    assert [path.name for path in (tmp_path / "oidc-keys").iterdir()] == [f"{key.kid}.pem"]


def _procedure() -> str:
    """The offline procedure as docs/chain.md gives it."""
    found = re.search(r"<!-- offline procedure -->\n```python\n(.*?)```", DOCS.read_text(), re.S)
    assert found is not None, "docs/chain.md lost its offline procedure"
    return found.group(1)


def test_the_documented_offline_procedure_verifies_an_export(
    settings: Settings, tmp_path: Path
) -> None:
    """The ~20 lines of docs/chain.md find an export intact, and name a changed record and a
    cut tail."""
    entries = [
        AuditEntry(f"k{n}", AuditType.SESSION_ENDED, "ended", session_id=f"s{n}") for n in range(5)
    ]
    env = _trail_env(settings, tmp_path, entries, AT + timedelta(seconds=1))
    export, jwks = tmp_path / "trail.jsonl", tmp_path / "jwks.json"
    generate_key(tmp_path / "oidc-keys")  # what a worker's start does
    assert CliRunner().invoke(main, ["audit", "export", "-o", str(export)], env=env).exit_code == 0
    jwks.write_text(CliRunner().invoke(main, ["keys", "jwks"], env=env).stdout)
    script = tmp_path / "verify_export.py"
    script.write_text(_procedure())

    def run(path: Path) -> str:
        done = subprocess.run(
            [sys.executable, str(script), str(path), str(jwks)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        return done.stdout

    assert run(export) == "intact up to position 5, 1 checkpoints\n"
    lines = export.read_text().splitlines()
    changed = tmp_path / "changed.jsonl"
    changed.write_text("\n".join(line.replace('"s2"', '"s3"') for line in lines) + "\n")
    record = json.loads(lines[-3])
    assert run(changed) == f"broken at position 3 record {record['id']}\n1 broken\n"
    cut = tmp_path / "cut.jsonl"
    cut.write_text("\n".join(lines[:-1]) + "\n")
    assert run(cut) == "1 broken\n"


def test_bad_options_are_refused_naming_them(tmp_path: Path) -> None:
    """A JWKS that is none, a missing export, --since with --file and a bad --before: each a
    message naming the option or file, exit 2, no traceback."""
    env = {"LOGOUT_DATA_DIR": str(tmp_path), "LOGOUT_LOG_LEVEL": "WARNING"}
    jwks = tmp_path / "jwks.json"
    jwks.write_text('{"keys": 3}')
    export = tmp_path / "trail.jsonl"
    export.write_text("")

    def run(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(main, ["audit", *args], env=env)
        return result.exit_code, result.stderr

    status, said = run("verify", "--file", str(export), "--jwks", str(jwks))
    assert status == 2
    assert "not a JWKS (a JSON object with keys); give what `keys jwks` prints" in said
    jwks.write_text('{"keys": []}')
    status, said = run("verify", "--file", str(tmp_path / "none.jsonl"), "--jwks", str(jwks))
    assert (status, "no such file; give an export's path" in said) == (2, True)
    status, said = run("verify", "--file", str(export), "--jwks", str(jwks))
    assert (status, "empty, so not an export" in said) == (2, True)
    export.write_text('{"kind":"export","at":"2026-01-31T12:00:00Z","since":null,"until":null}\n')
    status, said = run("verify", "--file", str(export), "--jwks", str(jwks))  # an empty stretch
    assert (status, said) == (0, "")
    status, said = run("verify", "--file", str(export), "--since", "2026-01-01")
    assert (status, "--since is for the database" in said) == (2, True)
    status, said = run("purge", "--before", "last week")
    assert (status, "'--before'" in said) == (2, True)


def test_an_export_that_cannot_be_written_names_o_and_why(tmp_path: Path) -> None:
    """-o in a missing directory or on a directory: exit 2 naming -o and the reason, before
    anything is read; a write failing part-way (a full device): exit 8, cut short."""
    env = {"LOGOUT_DATA_DIR": str(tmp_path), "LOGOUT_LOG_LEVEL": "WARNING"}
    assert CliRunner().invoke(main, ["db", "upgrade"], env=env).exit_code == 0

    def export(target: str) -> Any:
        return CliRunner().invoke(main, ["audit", "export", "-o", target], env=env)

    missing = export(str(tmp_path / "none" / "x.jsonl"))
    assert missing.exit_code == 2, missing.output
    assert "Invalid value for '-o' / '--output'" in missing.stderr
    assert "its directory does not exist; give a file in an existing directory" in missing.stderr
    directory = export(str(tmp_path))
    assert directory.exit_code == 2, directory.output
    assert "it is a directory; give a file's path in it" in directory.stderr
    if Path("/dev/full").exists():
        full = export("/dev/full")
        assert full.exit_code == 8, full.output
        assert "cannot write to '/dev/full' (-o): No space left on device" in full.stderr
        assert "cut short, not an export" in full.stderr
    for result in (missing, directory):
        assert "internal error" not in result.output


@pytest.mark.parametrize(
    ("since", "until"),
    [
        ("2026-12-01", "2026-11-01"),
        ("2026-12-01", "2026-12-01"),
        ("2026-12-01T01:00+01:00", "2026-12-01"),
    ],
)
def test_an_export_range_that_selects_nothing_is_refused(
    since: str, until: str, tmp_path: Path
) -> None:
    """--until at or before --since (offsets counted): exit 2 naming both, nothing written."""
    env = {"LOGOUT_DATA_DIR": str(tmp_path), "LOGOUT_LOG_LEVEL": "WARNING"}
    target = tmp_path / "part.jsonl"
    args = ["audit", "export", "--since", since, "--until", until, "-o", str(target)]
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 2, result.output
    assert f"--until {until} is not after --since {since}" in result.stderr
    assert "exported" not in result.stderr
    assert not target.exists()


def test_verify_file_names_why_a_file_is_no_export(tmp_path: Path) -> None:
    """Not UTF-8, a device, a directory: each refused (exit 2) naming the file and the reason,
    never an internal error or a misleading 'no such file'."""
    env = {"LOGOUT_DATA_DIR": str(tmp_path), "LOGOUT_LOG_LEVEL": "WARNING"}
    jwks = tmp_path / "jwks.json"
    jwks.write_text('{"keys": []}')
    binary = tmp_path / "trail.jsonl"
    binary.write_bytes(b'{"kind":"export"}\n\xff\xfe\n')
    expected = {
        str(binary): "not UTF-8 text, so not an export (`audit export` writes UTF-8)",
        str(tmp_path): "a directory, not a file; give an export's path",
        "/dev/zero": "a character device, not a file; give an export's path",
    }
    for path, problem in expected.items():
        args = ["audit", "verify", "--file", path, "--jwks", str(jwks)]
        result = CliRunner().invoke(main, args, env=env)
        assert result.exit_code == 2, result.output
        assert f"{path}: file: {problem}" in result.stderr
        assert "no such file" not in result.stderr


def test_an_export_without_its_checkpoints_says_nothing_signed_it(
    settings: Settings, tmp_path: Path
) -> None:
    """Records whose links hold but that no signed checkpoint covers (the checkpoint lines
    dropped): intact, and said plainly that nothing signed covers them; --json names them."""
    entries = [AuditEntry(f"k{n}", AuditType.SESSION_ENDED, "ended") for n in range(3)]
    env = _trail_env(settings, tmp_path, entries)
    generate_key(tmp_path / "oidc-keys")
    export, cut = tmp_path / "trail.jsonl", tmp_path / "cut.jsonl"
    assert CliRunner().invoke(main, ["audit", "export", "-o", str(export)], env=env).exit_code == 0
    lines = export.read_text().splitlines()
    cut.write_text("".join(line + "\n" for line in lines if '"checkpoint"' not in line))

    def verify(path: Path, *more: str) -> Any:
        return CliRunner().invoke(main, ["audit", "verify", "--file", str(path), *more], env=env)

    assert verify(export).stdout == (
        "verified 3 records (positions 1 to 3) and 1 signed checkpoint: the chain is intact\n"
    )
    said = verify(cut)
    assert said.exit_code == 0
    assert said.stdout.splitlines() == [
        "verified 3 records (positions 1 to 3) and 0 signed checkpoints: the chain is intact",
        "but no signed checkpoint covers positions 1 to 3: their links hold together, yet "
        "nothing signed shows they are the trail as written (checkpoint lines missing or the "
        "file cut short, or exported without a signing key or with --until)",
    ]
    assert json.loads(verify(cut, "--json").stdout)["unsigned"] == [1, 3]
    assert json.loads(verify(export, "--json").stdout)["unsigned"] is None


def test_verify_and_purge_name_a_missing_schema_before_a_missing_key(tmp_path: Path) -> None:
    """On a database never upgraded, with no signing key either: exit 7 saying to run `db
    upgrade` (the first thing to fix), not exit 6 about the key."""
    env = {"LOGOUT_DATA_DIR": str(tmp_path), "LOGOUT_LOG_LEVEL": "WARNING"}
    for args in (["audit", "verify"], ["audit", "purge", "--before", "2026-01-01"]):
        result = CliRunner().invoke(main, args, env=env)
        assert result.exit_code == ExitCode.SCHEMA_OUTDATED, (args, result.output)
        assert "db upgrade" in result.output
        assert "signing key" not in result.output
