"""The benchmarks' shared helpers."""

from __future__ import annotations

from bench.common import command_line


def test_the_recorded_command_keeps_no_output_path() -> None:
    """Where ``--json`` wrote is a path of the machine that ran it: the command recorded with
    the results keeps the flag, not the path, in both spellings."""
    assert (
        command_line("session_import", ["--repeat", "5", "--json", "out/x.json", "--rps", "1"])
        == "python -m bench.session_import --repeat 5 --json --rps 1"
    )
    assert command_line("expiry", ["--json=/home/me/r.json"]) == "python -m bench.expiry --json"
    assert command_line("expiry", ["--json"]) == "python -m bench.expiry --json"
