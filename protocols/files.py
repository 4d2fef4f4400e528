"""Reading a configured file (a certificate, a key, a settings or providers file): bounded.

A path an operator configures may name anything: ``/dev/zero`` would be read forever, a FIFO
would block, a directory fails obscurely. Only regular files are read, and at most a stated
number of bytes; anything else is refused with a sentence naming the file.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Final

__all__ = [
    "CERTIFICATE_MAX",
    "CONFIG_MAX",
    "KEY_MAX",
    "UnreadableFileError",
    "file_kind",
    "read_regular_file",
]

#: The most read of a PEM private key file.
KEY_MAX: Final = 64 * 1024
#: The most read of a PEM certificate file (several certificates during a rollover).
CERTIFICATE_MAX: Final = 256 * 1024
#: The most read of a TOML settings or providers file.
CONFIG_MAX: Final = 16 * 1024 * 1024

_KINDS: Final = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
)


class UnreadableFileError(ValueError):
    """A configured file that cannot be read; the message says why (without the path)."""


def file_kind(mode: int) -> str:
    """What a file of ``mode`` is, in words (``a character device``)."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def read_regular_file(path: str | Path, limit: int) -> bytes:
    """The bytes of the regular file ``path``, of at most ``limit`` bytes.

    Raises :class:`UnreadableFileError` when it is missing or unreadable, not a regular
    file, or larger than ``limit``.
    """
    try:
        with open(path, "rb", opener=_open_nonblocking) as handle:
            mode = os.fstat(handle.fileno()).st_mode
            if not stat.S_ISREG(mode):
                raise UnreadableFileError(f"{file_kind(mode)}, not a regular file")
            data = handle.read(limit + 1)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise UnreadableFileError(reason[:1].lower() + reason[1:]) from exc
    if len(data) > limit:
        raise UnreadableFileError(f"larger than {limit:,} bytes; is it the right file?")
    return data


def _open_nonblocking(path: str, flags: int) -> int:
    """Open without blocking on a FIFO that has no writer (it is refused right after)."""
    return os.open(path, flags | os.O_NONBLOCK)
