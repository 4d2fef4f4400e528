"""What a command of the CLI imports: run in a fresh interpreter, its ``sys.modules`` read.

The reading commands (``config show``, ``audit list``) must start at once; these are the
stacks they must never load (``bench/cli_startup.py`` measures the time itself).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping

__all__ = ["NEVER_ON_READING_COMMANDS", "command_modules", "loaded_of"]

#: What neither ``config show`` nor ``audit list`` may import, with any submodule.
NEVER_ON_READING_COMMANDS = (
    "pydantic_settings",  # the settings are plain pydantic
    "sqlalchemy.orm",  # audit list reads through Core
    "structlog",  # they never log (a warning about a stray LOGOUT_* variable aside)
    "rich",  # plain text
    "alembic",  # they never migrate
    "dramatiq",
    "redis",
    "pika",
    "httpx",
    "aiohttp",
    "lxml",
    "xmlsec",
    "jwt",
    "cryptography",
    "maxminddb",
    "protocols.base",
)

_CODE = """
import contextlib, io, json, sys
from workers.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    main(json.loads(sys.argv[1]), standalone_mode=False)
print(json.dumps({"output": out.getvalue(), "modules": sorted(sys.modules)}))
"""


def command_modules(args: list[str], env: Mapping[str, str]) -> tuple[str, set[str]]:
    """Run ``logout-orchestrator ARGS`` in a new interpreter (environment: this one's without
    ``LOGOUT_*`` settings, plus ``env``): its output and every module it had loaded."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LOGOUT_") or "_TEST_" in k}
    result = subprocess.run(
        [sys.executable, "-c", _CODE, json.dumps(args)],
        env={**environ, **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    return report["output"], set(report["modules"])


def loaded_of(modules: Iterable[str], names: Iterable[str]) -> list[str]:
    """Which of ``names`` (packages or modules) ``modules`` holds, itself or a submodule."""
    loaded = set(modules)
    return sorted(
        name for name in names if name in loaded or any(m.startswith(f"{name}.") for m in loaded)
    )
