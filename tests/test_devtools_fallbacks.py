"""The dev tooling's Linux-only parts have portable fallbacks (Windows: no symlink privilege, no flock)."""
import os
from pathlib import Path

import pytest

from devtools import host_server, locks


def test_model_file_is_linked_hard_or_copied_where_symlinks_are_refused(tmp_path, monkeypatch):
    source = tmp_path / "weights.safetensors"
    source.write_bytes(b"abc")

    def refuse(self, *args, **kwargs):
        raise OSError("symbolic link privilege not held")

    monkeypatch.setattr(Path, "symlink_to", refuse)
    hard = tmp_path / "hard.safetensors"
    host_server._link_file(hard, source)
    assert not hard.is_symlink() and hard.read_bytes() == b"abc" and os.stat(hard).st_nlink == 2

    monkeypatch.setattr(os, "link", lambda *args: refuse(None))
    copied = tmp_path / "copied.safetensors"
    host_server._link_file(copied, source)
    assert not copied.is_symlink() and copied.read_bytes() == b"abc" and os.stat(copied).st_nlink == 1


def test_links_are_recognised_and_removed(tmp_path):
    target = tmp_path / "pack"
    target.mkdir()
    link = tmp_path / "custom_nodes_pack"
    assert not host_server._is_link(link)
    host_server._link_directory(link, target)
    assert host_server._is_link(link) and not host_server._is_link(target)
    host_server._remove_link(link)
    assert not link.exists() and target.is_dir()


def test_exclusive_lock_without_flock(tmp_path, monkeypatch):
    """The Windows branch (msvcrt), run here with a stand-in that refuses the first try."""
    tries = []

    class FakeMsvcrt:
        LK_NBLCK = 2

        @staticmethod
        def locking(fileno, mode, nbytes):
            tries.append((mode, nbytes))
            if len(tries) == 1:
                raise OSError("locked by another process")

    monkeypatch.setattr(locks, "fcntl", None)
    monkeypatch.setattr(locks, "msvcrt", FakeMsvcrt, raising=False)
    with locks.exclusive_lock(tmp_path / "x.lock", poll_seconds=0.01):
        pass
    assert tries == [(2, 1), (2, 1)]


@pytest.mark.skipif(os.name == "nt", reason="flock exists on Linux and macOS only")
def test_exclusive_lock_excludes_another_holder(tmp_path):
    import fcntl

    with locks.exclusive_lock(tmp_path / "y.lock"):
        with open(tmp_path / "y.lock", "a+") as other:
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
