"""Generated key material in the data directory: private files, written once, under a lock.

Shared by every handler that makes a default key on first use (the OIDC signing keys, the
SAML IdP key and certificate), so several worker processes starting at once make only one.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from schemas.errors import ConfigurationError

__all__ = [
    "STALE_PART",
    "KeyDirectory",
    "directory_lock",
    "make_key_directory",
    "unwritable_reason",
    "write_private",
]


@dataclass(frozen=True, slots=True)
class KeyDirectory:
    """A directory a handler will write generated keys to, and the settings that make
    generating unnecessary (``instead``: ``oidc_key_files (LOGOUT_OIDC_KEY_FILES)``)."""

    path: Path
    instead: str


def unwritable_reason(directory: Path, mode: int = 0o700) -> str | None:
    """Why files cannot be written in ``directory`` (made with ``mode`` if missing), or None.

    Tried, not guessed from permission bits (which a root user or a read-only mount make
    misleading): the directory is created and a temporary file written and removed.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=mode)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def _unwritable(where: Path, exc: OSError) -> ConfigurationError:
    return ConfigurationError(
        f"cannot write keys to {where}: {exc.strerror or exc}; use a writable directory "
        "(data_dir / LOGOUT_DATA_DIR, or keys generate --dir)"
    )


def make_key_directory(directory: Path) -> None:
    """Create ``directory`` (mode 0700) if needed; :class:`ConfigurationError` if it cannot."""
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise _unwritable(directory, exc) from exc


@contextmanager
def directory_lock(directory: Path) -> Iterator[None]:
    """Create ``directory`` (mode 0700) and hold an exclusive lock on it while inside.

    The lock is ``flock`` on ``<directory>/.lock``: it serialises processes on one machine
    and on a shared volume (the compose set-up), and is released when the process dies.
    Once it is held, what a writer killed mid-write left behind (a temporary file of
    :func:`write_private` older than :data:`STALE_PART`) is removed: it holds key material.
    """
    make_key_directory(directory)
    try:
        lock = (directory / ".lock").open("w")
    except OSError as exc:
        raise _unwritable(directory, exc) from exc
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _remove_stale_parts(directory)
        yield


#: Seconds after which a temporary file of :func:`write_private` is a dead writer's leftover
#: (a live one writes a key in well under a second).
STALE_PART = 600.0
_PART = ".part"


def _remove_stale_parts(directory: Path) -> None:
    horizon = time.time() - STALE_PART
    for leftover in directory.glob(f".*{_PART}"):
        with suppress(OSError):  # gone meanwhile, or not ours to remove: harmless
            if leftover.lstat().st_mtime < horizon:
                leftover.unlink()


def write_private(path: Path, data: bytes) -> None:
    """Write a new file readable by its owner only (0600); never overwrite one.

    The file appears whole or not at all: the data goes to a hidden temporary file beside
    it, is flushed to disk, and is then linked in under ``path`` (which fails when ``path``
    exists), and the directory is flushed too. A process that reads the directory without
    the lock (another worker loading its keys while this one generates) never sees a
    half-written key, nor does a start after a crash or a power loss mid-write.
    """
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_PART, dir=path.parent)
    except OSError as exc:
        raise _unwritable(path.parent, exc) from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            fd = -1  # the file object owns it now
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        _publish(temporary, path)
        _sync_directory(path.parent)
    finally:
        if fd >= 0:
            os.close(fd)
        with suppress(FileNotFoundError):
            os.unlink(temporary)


def _publish(temporary: str, path: Path) -> None:
    """Give the written ``temporary`` its name ``path``, unless ``path`` exists."""
    try:
        os.link(temporary, path)
    except FileExistsError:
        raise
    except OSError as exc:
        # A file system without hard links (FAT, some network mounts): rename instead. A
        # rename would replace an existing file (or a dangling link), so look first; what
        # another process could write meanwhile is excluded by the directory lock the
        # handlers hold, or by the name (``keys generate`` names a key by its thumbprint).
        if os.path.lexists(path):
            raise FileExistsError(path) from exc
        try:
            os.replace(temporary, path)
        except OSError as again:
            raise _unwritable(path.parent, again) from again


def _sync_directory(directory: Path) -> None:
    """Flush ``directory`` itself, so that a new name in it survives a power loss (best
    effort: some file systems cannot open or flush a directory)."""
    with suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
