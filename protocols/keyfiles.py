"""Generated key material in the data directory: private files, written once, under a lock.

Shared by every handler that makes a default key on first use (the OIDC signing keys, the
SAML IdP key and certificate), so several worker processes starting at once make only one.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["directory_lock", "write_private"]


@contextmanager
def directory_lock(directory: Path) -> Iterator[None]:
    """Create ``directory`` (mode 0700) and hold an exclusive lock on it while inside.

    The lock is ``flock`` on ``<directory>/.lock``: it serialises processes on one machine
    and on a shared volume (the compose set-up), and is released when the process dies.
    """
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    with (directory / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def write_private(path: Path, data: bytes) -> None:
    """Write a new file readable by its owner only (0600); never overwrite one."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
