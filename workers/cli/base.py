"""What every command shares: the console, the settings, reading input, and the group and
command classes that turn every failure into one clear message and its exit status."""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from schemas.errors import InputError, LogoutError, Problem
from workers.exit_codes import ExitCode, exit_code_for, foreign_error

if TYPE_CHECKING:
    from collections.abc import Iterable
    from datetime import datetime

    from rich.console import Console

    from orchestrator.operations.page import Page
    from orchestrator.settings import Settings

__all__ = [
    "MAX_WAIT",
    "Actor",
    "Command",
    "Group",
    "Seconds",
    "console",
    "cut_note",
    "fail",
    "listing_options",
    "page_limit",
    "print_json_lines",
    "print_page",
    "print_table",
    "read_input",
    "settings_of",
    "since_of",
    "write_lines",
]


def console(stderr: bool = False) -> Console:
    from rich.console import Console

    # Piped output (CI logs, files) is not cut to 80 columns.
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else 200
    return Console(file=stream, highlight=False, soft_wrap=True, width=width)


def settings_of(ctx: click.Context) -> Settings:
    settings: Settings = ctx.find_root().obj
    return settings


def since_of(text: str | None) -> datetime | None:
    """``--since`` as a time (any form the tool prints, or a date); a bad one is click's
    usage error naming the option (exit 2)."""
    if text is None:
        return None
    from orchestrator.audit_query import parse_timestamp

    try:
        return parse_timestamp(text)
    except InputError as exc:
        raise click.BadParameter(exc.problems[0].message, param_hint="'--since'") from None


#: The longest ``--wait`` a command takes, in seconds: a day.
MAX_WAIT = 86_400.0


class Seconds(click.types.FloatParamType):
    """``--wait``: seconds, a finite number above 0 (or from 0, ``zero=True``) up to
    :data:`MAX_WAIT`. click's FloatRange lets ``nan`` through (no comparison holds), and
    ``inf`` or ``1e300`` seconds overflow the clock they are added to."""

    name = "seconds"

    def __init__(self, *, zero: bool = False) -> None:
        self.zero = zero

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        seconds: float = super().convert(value, param, ctx)
        low = seconds >= 0 if self.zero else seconds > 0
        if not (low and seconds <= MAX_WAIT):  # nan and inf fail here too
            lowest = "from 0" if self.zero else "above 0 and"
            self.fail(
                f"{value!r} is not a number of seconds {lowest} up to {MAX_WAIT:,.0f} (a day)",
                param,
                ctx,
            )
        return seconds


class Actor(click.types.StringParamType):
    """``--actor``: who does it, as the audit trail records it: 1 to 255 printable
    characters, not only spaces (an empty actor, or one with a control character, would be
    an unreadable record an auditor cannot trace)."""

    name = "name"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        text: str = super().convert(value, param, ctx)
        if not text.strip():
            self.fail("is empty; give who does it (your admin id)", param, ctx)
        from schemas.fields import NAME_MAX  # an event's actor: the same bound

        if len(text) > NAME_MAX:
            self.fail(f"is {len(text):,} characters long; at most {NAME_MAX}", param, ctx)
        if not text.isprintable():
            from schemas.fields import printable

            self.fail(
                f"'{printable(text)}' holds a control character; give printable text", param, ctx
            )
        return text


def listing_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--limit`` and ``--json`` of a listing (the latest 1,000 in the table by default)."""
    command = click.option(
        "--json", "as_json", is_flag=True, help="JSON lines instead of a table."
    )(command)
    return click.option(
        "--limit",
        type=click.IntRange(1),
        default=None,
        help="At most this many, the latest (default: 1000 for the table, all with --json).",
    )(command)


def write_lines(lines: Iterable[str]) -> None:
    """The lines on standard output; a reader that stops early (``| head``) ends it quietly."""
    try:
        for line in lines:
            sys.stdout.write(line + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        # Python would report the closed pipe again at exit: point stdout elsewhere first.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def print_json_lines(items: Iterable[dict[str, Any]]) -> None:
    """One JSON object a line on standard output (see :func:`write_lines`)."""
    import json

    write_lines(json.dumps(item, default=str) for item in items)


def print_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """A table on standard output (rich, no borders); cells are text, never markup."""
    from rich.table import Table
    from rich.text import Text

    table = Table(*header, box=None, pad_edge=False, header_style="bold")
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    out = console()
    with out.capture() as captured:
        out.print(table)
    sys.stdout.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))


def page_limit(limit: int | None, as_json: bool) -> int | None:
    """The rows a listing reads: ``--limit``, else every one with ``--json``, else 1,000."""
    from orchestrator.operations.page import TABLE_LIMIT

    return limit if limit is not None or as_json else TABLE_LIMIT


def print_page(
    page: Page[Any],
    as_json: bool,
    header: Sequence[str],
    row: Callable[[Any], Sequence[str]],
    what: str,
) -> None:
    """A listing's page as JSON lines (each item's ``as_json()``) or a table of ``row(item)``,
    and the note on standard error when its limit cut it."""
    if as_json:
        print_json_lines(item.as_json() for item in page.items)
    else:
        print_table(header, (row(item) for item in page.items))
    cut_note(len(page.items), page.total, what)


def cut_note(shown: int, total: int, what: str) -> None:
    """Say on standard error that a limit cut a listing, and how to see the rest."""
    if total > shown:
        console(stderr=True).print(
            f"showing the latest {shown:,} of {total:,} {what}; use --limit or --json",
            markup=False,
        )


def read_input(path: str, *, regular: bool = False) -> str:
    """The text of ``path`` (``-``: standard input); InputError (exit 2) when it cannot be read
    or is not UTF-8 (JSON lines and TOML are UTF-8).

    A device, directory or socket is refused (``/dev/zero`` would be read forever), except
    ``/dev/null`` (empty); a FIFO is read unless ``regular`` (a configuration file, read whole
    and bounded).
    """
    import os
    import stat

    from protocols.files import CONFIG_MAX, UnreadableFileError, file_kind, read_regular_file

    try:
        if path == "-":
            return sys.stdin.read()
        if path == os.devnull:
            return ""
        if regular:
            return read_regular_file(path, CONFIG_MAX).decode("utf-8")
        mode = os.stat(path).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
            problem = f"{file_kind(mode)}, not a file; give a file, or - for standard input"
            raise InputError([Problem(path, "", problem)])
        return Path(path).read_text(encoding="utf-8")
    except UnreadableFileError as exc:
        problem = f"cannot read it: {exc}"
    except OSError as exc:
        problem = f"cannot read it: {exc.strerror or exc}; check the path and its permissions"
    except UnicodeDecodeError as exc:
        problem = f"not UTF-8 text (byte {exc.start}); save it as UTF-8"
    raise InputError([Problem(path if path != "-" else "standard input", "", problem)])


def fail(ctx: click.Context, error: LogoutError) -> None:
    """Print ``error`` as one or two lines and exit with its status."""
    if isinstance(error, InputError):
        console(stderr=True).print(
            f"[bold red]refused[/]: {len(error.problems)} problem(s), nothing was applied"
        )
        for problem in error.problems:
            console(stderr=True).print(f"  {problem}", markup=False)
    else:
        from rich.markup import escape

        console(stderr=True).print(f"[bold red]error[/]: {escape(str(error))}")
    ctx.exit(int(exit_code_for(error)))


class _Teardown:
    """Whether the process needs the interpreter's teardown when the command is done."""

    needed = True


def _exit_at_once(code: Any) -> None:
    """Flush the output and end the process with ``code`` (a ``SystemExit`` code), skipping
    the interpreter's teardown: freeing every loaded module costs a reading command a
    quarter of its run (``bench/cli_startup.py``) and, after it, nothing is left to do."""
    if isinstance(code, str):
        sys.stderr.write(code + "\n")
    status = 0 if code is None else code if isinstance(code, int) else 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:  # a reader that stopped early (``| head``) wants no more
        pass
    os._exit(status)


class Command(click.Command):
    """A command; ``logs=False`` for those that never log (no logging set-up to pay for).

    ``teardown=False`` for those that only read and print, holding nothing open when done
    (threads, files, connections): run as the program, they exit without the interpreter's
    teardown (see :func:`_exit_at_once`) and run without the cyclic garbage collector, which
    costs them a tenth of their start (scanning every object their imports made, again and
    again) and would find little: streaming the whole audit trail leaves about 8 objects per
    page of 500 records to it. Every other command turns the collector back on.
    """

    def __init__(self, *args: Any, logs: bool = True, teardown: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.logs = logs
        self.teardown = teardown

    def invoke(self, ctx: click.Context) -> Any:
        settings = ctx.find_root().obj
        if self.logs and settings is not None:
            from orchestrator.logging import configure_logging

            configure_logging(settings.log_level, settings.log_format)
        _Teardown.needed = self.teardown
        if self.teardown:
            gc.enable()
        return super().invoke(ctx)


class Group(click.Group):
    """Turns every failure into one clear message and its exit status, never a traceback."""

    command_class = Command
    group_class = type  # subgroups are Group too

    def main(self, args: Sequence[str] | None = None, *rest: Any, **options: Any) -> Any:
        """Run; as the program itself (the command line read from ``sys.argv``, in standalone
        mode), without the garbage collector until a command that needs it starts, and a
        command with ``teardown=False`` ends the process at once when done."""
        if args is not None or not options.get("standalone_mode", True):
            return super().main(args, *rest, **options)
        gc.disable()  # imports make many objects and no cyclic garbage (see Command)
        try:
            return super().main(args, *rest, **options)
        except SystemExit as exc:
            if not _Teardown.needed:
                _exit_at_once(exc.code)
            raise
        finally:
            gc.enable()

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except LogoutError as exc:
            fail(ctx, exc)
        except Exception as exc:  # the boundary: a sentence, never a traceback
            settings = ctx.find_root().obj
            if settings is not None:
                from orchestrator.settings import redact_url

                database = redact_url(settings.effective_database_url)
                translated = foreign_error(exc, database, redact_url(settings.broker_url))
                if translated is not None:
                    fail(ctx, translated)
                if settings.log_level == "DEBUG":
                    raise
            from rich.markup import escape

            # The first line only: a database error goes on with the SQL and its parameters,
            # which may hold what the input held.
            reason = (str(exc).strip().splitlines() or [""])[0]
            console(stderr=True).print(
                f"[bold red]internal error[/]: {type(exc).__name__}: {escape(reason)}"
            )
            console(stderr=True).print(
                "This is a bug; LOGOUT_LOG_LEVEL=DEBUG shows the traceback to report.",
                markup=False,
            )
            ctx.exit(int(ExitCode.INTERNAL))
