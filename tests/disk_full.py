"""A small disk that tests can fill: a tmpfs of a few MiB mounted inside the test's tmp dir.

``with small_disk(tmp_path / "disk") as disk:`` mounts it (root only; the test is
skipped with the reason where mounting is not allowed, e.g. an unprivileged
container) and unmounts it afterwards, also when the test fails. Stop every process
that has files open on it before the block ends (a busy mount is detached lazily).

``disk.fill()`` writes a filler file until the disk says ENOSPC; ``disk.free()``
deletes it, giving every byte back at once.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import pytest


class SmallDisk:
    """A mounted tmpfs at ``path`` and the filler file that fills it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.filler = path / "filler.bin"

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.path).free

    def fill(self) -> int:
        """Append to the filler until a write fails with ENOSPC; the bytes written by this call."""
        written = 0
        with open(self.filler, "ab", buffering=0) as f:
            for chunk in (1 << 16, 1 << 12, 1):  # big steps first, then the last pages
                block = b"\0" * chunk
                while True:
                    try:
                        written += f.write(block) or 0
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
                        break
        return written

    def free(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.filler.unlink()


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=30)


@contextlib.contextmanager
def small_disk(path: Path, size: str = "4m") -> Iterator[SmallDisk]:
    """Mount a ``size`` tmpfs at ``path`` for the block; skip the test where that is not allowed."""
    if os.geteuid() != 0:
        pytest.skip("a full-disk test mounts a tmpfs, which needs root")
    if shutil.which("mount") is None or shutil.which("umount") is None:
        pytest.skip("a full-disk test needs mount(8) and umount(8)")
    path.mkdir(parents=True, exist_ok=True)
    mounted = _run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path))
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (mount -t tmpfs: {mounted.stderr.strip() or mounted.returncode})")
    try:
        yield SmallDisk(path)
    finally:
        if _run("umount", str(path)).returncode != 0:
            _run("umount", "-l", str(path))  # still busy: detach now, the kernel frees it when closed
