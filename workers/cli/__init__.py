"""``logout-orchestrator``: the command line. Settings are read once, at the root group.

Each command imports what it needs when it runs, so ``--help``, ``config show`` and
``audit list`` start without loading the HTTP, SAML and broker stacks (``bench/cli_startup.py``).
Failures are one or two sentences and an exit status from :class:`workers.exit_codes.ExitCode`.
A module per command group registers its commands on :data:`main` when imported here.
"""

from workers.cli import (  # noqa: F401  (each registers its commands)
    admin,
    audit,
    binding,
    deliveries,
    events,
    identity,
    providers,
    publish,
    service,
    sessions,
    ssf,
)
from workers.cli.root import main

__all__ = ["main"]
