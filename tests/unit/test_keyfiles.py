"""Generated key files: written whole or not at all, never over another, owner-only."""

from __future__ import annotations

import errno
import os
import stat
import time
from pathlib import Path

import pytest

from protocols.keyfiles import STALE_PART, directory_lock, write_private
from protocols.oidc.keys import KeyRing
from schemas.errors import ConfigurationError


@pytest.fixture
def no_hard_links(monkeypatch: pytest.MonkeyPatch) -> None:
    """A file system without hard links (FAT, some network mounts): ``os.link`` refuses."""

    def refuse(source: str, target: Path) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", refuse)


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
    assert seen_while_writing[:1] == [False], "the data was flushed under the key's name"
    assert len(seen_while_writing) == 2, "the file, then the directory, is flushed"
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


@pytest.mark.usefixtures("no_hard_links")
def test_without_hard_links_the_file_is_renamed_into_place(tmp_path: Path) -> None:
    """On a file system that has no hard links (FAT, some network mounts) the temporary file
    is renamed instead, and an existing file is still never replaced."""
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


@pytest.mark.usefixtures("no_hard_links")
def test_without_hard_links_a_dangling_link_is_not_replaced(tmp_path: Path) -> None:
    """The rename fallback refuses a name that is taken, even by a link to nothing."""
    path = tmp_path / "kid.pem"
    path.symlink_to(tmp_path / "nowhere")
    with pytest.raises(FileExistsError):
        write_private(path, b"data")
    assert path.is_symlink()
    assert not (tmp_path / "nowhere").exists()


def test_the_lock_removes_a_dead_writers_leftover(tmp_path: Path) -> None:
    """A temporary file a killed writer left (it holds key material) goes once it is older
    than STALE_PART, when the directory is next locked; a fresh one (a live writer's) stays,
    and neither is ever read as a key."""
    old = tmp_path / ".kid.pem.abc123.part"
    fresh = tmp_path / ".kid2.pem.def456.part"
    old.write_bytes(b"-----BEGIN PRIVATE KEY-----")
    fresh.write_bytes(b"-----BEGIN PRIVATE KEY-----")
    long_ago = time.time() - STALE_PART - 60
    os.utime(old, (long_ago, long_ago))
    assert KeyRing([], tmp_path).load(generate=False) == [], "a leftover is no key"
    with directory_lock(tmp_path):
        pass
    assert not old.exists()
    assert fresh.exists()
