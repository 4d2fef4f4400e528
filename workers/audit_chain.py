"""``audit verify``, ``audit export`` and ``audit purge``: the chain's commands.

They never migrate (an older schema exits 7: run ``db upgrade``); each seals what is
committed first (:mod:`orchestrator.chain.sealing`), so what they read is the whole trail.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any

import click

from orchestrator.audit_query import parse_timestamp
from orchestrator.errors import ConfigurationError, IncompleteError, InputError, Problem
from workers.exit_codes import ExitCode

if TYPE_CHECKING:
    from orchestrator.chain.checking import Verification
    from orchestrator.chain.checkpoints import CheckpointKeys
    from orchestrator.settings import Settings

__all__ = ["export_command", "purge_command", "timestamp_option", "verify_command"]


def timestamp_option(text: str | None, option: str) -> datetime | None:
    """``--<option>`` as a timestamp; a bad one is click's usage error naming the option."""
    if text is None:
        return None
    try:
        return parse_timestamp(text)
    except InputError as exc:
        message = exc.problems[0].message
        raise click.BadParameter(message, param_hint=f"'--{option}'") from None


def _engine(settings: Settings) -> Any:
    from orchestrator.store.reading import reading_engine

    return reading_engine(settings.effective_database_url, settings.origin("database_url"))


_NO_KEYS = (
    "no OIDC signing key to {what}: neither key_files of [protocols.oidc] "
    "(LOGOUT_OIDC_KEY_FILES) nor a key in {directory} (the workers generate one there when "
    "they start); {fix}"
)


def _no_keys(settings: Settings, what: str, fix: str) -> ConfigurationError:
    directory = settings.data_dir / "oidc-keys"
    return ConfigurationError(_NO_KEYS.format(what=what, directory=directory, fix=fix))


def _signing_keys(settings: Settings) -> CheckpointKeys:
    """The workers' keys, read (never generated); none is a configuration error."""
    from workers.chain_upkeep import stored_checkpoint_keys

    keys = stored_checkpoint_keys(settings)
    if keys is None:
        fix = "run the command where the workers run, with their settings"
        raise _no_keys(settings, "sign the purge's checkpoint with", fix)
    return keys


def _verifying_keys(settings: Settings, jwks_path: str | None) -> CheckpointKeys:
    """``--jwks``, else the workers' keys (read, never generated): only verifying."""
    from orchestrator.chain.checkpoints import CheckpointKeys
    from workers.chain_upkeep import stored_checkpoint_keys

    if jwks_path is None:
        keys = stored_checkpoint_keys(settings)
        if keys is None:
            fix = "give --jwks JWKS (what `keys jwks` prints where the workers run)"
            raise _no_keys(settings, "verify the checkpoints with", fix)
        return CheckpointKeys(None, keys.jwks)
    from workers.cli.base import read_input

    try:
        jwks = json.loads(read_input(jwks_path))
    except ValueError:
        jwks = None
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        problem = "not a JWKS (a JSON object with keys); give what `keys jwks` prints"
        raise InputError([Problem(jwks_path, "jwks", problem)])
    return CheckpointKeys(None, jwks)


def _span(found: Verification) -> str:
    if found.first is None:
        return "no records"
    return f"{found.records:,} records (positions {found.first:,} to {found.last:,})"


def report(
    found: Verification, as_json: bool, out: Callable[[str], None], *, offline: bool = False
) -> bool:
    """Print what a verification found; True when the chain verifies. ``offline`` (an
    export): say so when records are covered by no signed checkpoint, the only proof there."""
    if as_json:
        document = {
            "ok": not found.findings,
            "records": found.records,
            "first": found.first,
            "last": found.last,
            "checkpoints": found.checkpoints,
            "unsigned": list(found.unsigned) if found.unsigned is not None else None,
            "findings": [finding.as_json() for finding in found.findings],
        }
        out(json.dumps(document))
        return not found.findings
    signed = f"{found.checkpoints} signed checkpoint{'s' if found.checkpoints != 1 else ''}"
    if not found.findings:
        out(f"verified {_span(found)} and {signed}: the chain is intact")
    else:
        out(f"{len(found.findings)} problem(s) in {_span(found)}, {signed}:")
        for finding in found.findings:
            out(f"  {finding}")
    if offline and found.unsigned is not None:
        out(_unsigned_note(*found.unsigned))
    return not found.findings


def _unsigned_note(first: int, last: int) -> str:
    what = f"position {first:,}" if first == last else f"positions {first:,} to {last:,}"
    return (
        f"but no signed checkpoint covers {what}: their links hold together, yet nothing "
        "signed shows they are the trail as written (checkpoint lines missing or the file cut "
        "short, or exported without a signing key or with --until)"
    )


def verify_command(
    settings: Settings,
    *,
    since: str | None,
    file: str | None,
    jwks_path: str | None,
    as_json: bool,
) -> int:
    """Verify the database's chain (or an export, offline); returns the exit status."""
    from orchestrator.chain.checking import verify_database

    start = timestamp_option(since, "since")
    if file is not None and start is not None:
        raise click.UsageError("--since is for the database; an export holds what it holds")
    if file is not None:
        found = _verify_file(file, _verifying_keys(settings, jwks_path).jwks)
    else:
        engine = _engine(settings)  # a missing schema or database first, then the keys
        try:
            found = verify_database(engine, _verifying_keys(settings, jwks_path), since=start)
        finally:
            engine.dispose()
    intact = report(found, as_json, click.echo, offline=file is not None)
    return int(ExitCode.OK if intact else ExitCode.TRAIL_BROKEN)


def _export_opener(path: str) -> Callable[[], IO[str]]:
    """Opens the export at ``path`` (read twice: it may not be a FIFO or a device); what
    cannot be read is an InputError naming the file and why."""

    def opener() -> IO[str]:
        from protocols.files import file_kind

        try:
            mode = os.stat(path).st_mode
            if not stat.S_ISREG(mode):
                problem = f"{file_kind(mode)}, not a file; give an export's path"
                raise InputError([Problem(path, "file", problem)])
            return open(path, encoding="utf-8")
        except FileNotFoundError:
            problem = "no such file; give an export's path"
        except OSError as exc:
            problem = f"cannot read it: {exc.strerror or exc}; check the path and its permissions"
        raise InputError([Problem(path, "file", problem)])

    return opener


def _verify_file(path: str, jwks: dict[str, Any]) -> Verification:
    from orchestrator.chain.checking import verify_export

    try:
        return verify_export(path, _export_opener(path), jwks)
    except UnicodeDecodeError:
        problem = "not UTF-8 text, so not an export (`audit export` writes UTF-8)"
        raise InputError([Problem(path, "file", problem)]) from None


def _refuse_reversed(
    since: str | None, start: datetime | None, until: str | None, end: datetime | None
) -> None:
    """``--until`` at or before ``--since`` selects nothing: a usage error naming both."""
    if start is not None and end is not None and end <= start:
        raise click.UsageError(
            f"--until {until} is not after --since {since}: the range selects no record; "
            "give an --until later than --since (or swap them)"
        )


def _output(path: str | None) -> AbstractContextManager[IO[str]]:
    """``-o FILE`` opened for writing (standard output for none or ``-``); one that cannot be
    is click's usage error naming ``-o`` and why, before anything is read or signed."""
    if path in (None, "-"):
        return nullcontext(sys.stdout)
    try:
        return open(path, "w", encoding="utf-8")  # the caller closes it
    except IsADirectoryError:
        reason = "it is a directory; give a file's path in it"
    except FileNotFoundError:
        reason = "its directory does not exist; give a file in an existing directory"
    except OSError as exc:
        reason = f"{exc.strerror or exc}; check the path and its permissions"
    raise click.BadParameter(f"cannot write {path!r}: {reason}", param_hint="'-o' / '--output'")


def _unwritable(path: str | None, exc: OSError) -> IncompleteError:
    """Writing the export failed part-way (a full disk, a device that takes no writes)."""
    where = "standard output" if path in (None, "-") else f"{path!r} (-o)"
    return IncompleteError(
        f"the export stopped: cannot write to {where}: {exc.strerror or exc}; what was written "
        "is cut short, not an export: export again where it can be written whole"
    )


def export_command(
    settings: Settings, *, fmt: str, since: str | None, until: str | None, output: str | None
) -> None:
    """Stream the export to ``output`` (default standard output); the count to stderr."""
    from orchestrator.chain.checking import export_trail
    from orchestrator.chain.checkpoints import CheckpointKeys
    from workers.chain_upkeep import stored_checkpoint_keys

    start, end = timestamp_option(since, "since"), timestamp_option(until, "until")
    _refuse_reversed(since, start, until, end)
    keys = stored_checkpoint_keys(settings) or CheckpointKeys(None, {})
    engine = _engine(settings)  # a missing schema or database first: -o is not yet touched
    try:
        with _output(output) as out:
            written = export_trail(engine, out, fmt, keys, settings.issuer, since=start, until=end)
    except BrokenPipeError:  # a reader that stopped early (``| head``) wants no more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return
    except OSError as exc:
        raise _unwritable(output, exc) from None
    finally:
        engine.dispose()
    click.echo(f"exported {written:,} records", err=True)
    if keys.signing is None:
        click.echo(
            "no OIDC signing key here (key_files of [protocols.oidc], or the data directory's "
            "oidc-keys): no checkpoint was signed for this export, so the records after the "
            "last stored checkpoint are covered by no signature; export where the workers run",
            err=True,
        )


def purge_command(settings: Settings, *, before: str, actor: str | None) -> int:
    """Purge (which verifies first, in its transaction), verify what remains; returns the
    exit status."""
    from orchestrator.chain.checking import verify_database
    from orchestrator.chain.purging import purge_before

    cutoff = timestamp_option(before, "before")
    assert cutoff is not None
    if cutoff > datetime.now(UTC):  # it would purge the records still being written
        raise click.BadParameter(
            f"{before!r} is in the future; a purge removes what was written before a time "
            "that has passed: give one",
            param_hint="'--before'",
        )
    engine = _engine(settings)  # a missing schema or database first, then the keys
    try:
        keys = _signing_keys(settings)
        done = purge_before(engine, keys, settings.issuer, cutoff, actor)
        if done.refused is not None:
            report(done.refused, False, lambda line: click.echo(line, err=True))
            click.echo(
                "refused: nothing was purged; a purge would sign a tampered chain "
                "(export it and find out what happened first)",
                err=True,
            )
            return int(ExitCode.TRAIL_BROKEN)
        if done.checkpoint is None:
            click.echo(f"nothing to purge: no record of the chain was written before {before}")
            return int(ExitCode.OK)
        click.echo(
            f"purged {done.deleted:,} records (positions up to {done.through:,}) written "
            f"before {before}; checkpoint {done.checkpoint.id} signs position {done.through:,}"
        )
        remaining = verify_database(engine, keys)
    finally:
        engine.dispose()
    intact = report(remaining, False, lambda line: click.echo(f"what remains: {line}"))
    return int(ExitCode.OK if intact else ExitCode.TRAIL_BROKEN)
