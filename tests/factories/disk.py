"""A real small filesystem (tmpfs) that tests fill up and free, to meet ENOSPC as a full disk gives it.

Mounting needs root (CI runs as root); elsewhere the tests that need it skip, saying why.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


class SmallDisk:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._filler = path / "filler.bin"

    def fill(self) -> None:
        """Take every free byte (the next write anywhere on this disk fails with ENOSPC)."""
        with self._filler.open("ab", buffering=0) as handle:
            block = b"\0" * 65536
            try:
                while True:
                    handle.write(block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
            try:
                while True:
                    handle.write(b"\0")
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise

    def free(self) -> None:
        self._filler.unlink(missing_ok=True)

    def remount(self, mode: str) -> None:
        """`ro` or `rw`, in place."""
        subprocess.run(["mount", "-o", f"remount,{mode}", str(self.path)], check=True)


@contextmanager
def small_disk(path: Path, size_bytes: int) -> Iterator[SmallDisk]:
    if os.geteuid() != 0:
        pytest.skip("a full disk is met on a tmpfs, and mounting one needs root (CI runs as root)")
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(path)], check=True)
    try:
        yield SmallDisk(path)
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
