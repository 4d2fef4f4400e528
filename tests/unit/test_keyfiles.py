"""Generated key files: written whole or not at all, never over another, owner-only."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from protocols.keyfiles import write_private
from schemas.errors import ConfigurationError


def test_a_key_file_appears_only_once_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the data is written and flushed, no file has the key's name: a process reading
    the directory without the lock finds no key, or the whole key (never an empty one)."""
    path = tmp_path / "kid.pem"
    seen_while_writing: list[bool] = []
    fsync = os.fsync

    def watching_fsync(fd: int) -> None:
        seen_while_writing.append(path.exists())
        fsync(fd)

    monkeypatch.setattr(os, "fsync", watching_fsync)
    write_private(path, b"-----BEGIN PRIVATE KEY-----\n")
    assert seen_while_writing == [False]
    assert path.read_bytes() == b"-----BEGIN PRIVATE KEY-----\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["kid.pem"], "no temporary file is left"


def test_an_existing_file_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "kid.pem"
    write_private(path, b"first")
    with pytest.raises(FileExistsError):
        write_private(path, b"second")
    assert path.read_bytes() == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["kid.pem"]


def test_without_hard_links_the_file_is_renamed_into_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a file system that has no hard links (FAT, some network mounts) the temporary file
    is renamed instead, and an existing file is still never replaced."""

    def no_links(source: str, target: Path) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    path = tmp_path / "kid.pem"
    write_private(path, b"first")
    assert path.read_bytes() == b"first"
    with pytest.raises(FileExistsError):
        write_private(path, b"second")
    assert path.read_bytes() == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["kid.pem"]


def test_an_unwritable_directory_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"cannot write keys to .*LOGOUT_DATA_DIR"):
        write_private(tmp_path / "missing" / "kid.pem", b"data")
