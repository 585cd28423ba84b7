"""A small loop-mounted ext4 filesystem for tests that fill a disk (never the real one)."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

MiB = 1024 * 1024

__all__ = ["fill", "fill_up", "loop_ext4"]


@contextlib.contextmanager
def loop_ext4(tmp_path: Path) -> Iterator[Path]:
    """A 64 MiB ext4 filesystem in a file, mounted meanwhile and unmounted after."""
    image, mount = tmp_path / "disk.img", tmp_path / "mnt"
    mount.mkdir()
    with image.open("wb") as file:
        file.truncate(64 * MiB)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)], check=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(path: Path, leave: int) -> None:
    """Take the disk's free space down to about ``leave`` bytes with a file of real blocks."""
    free = shutil.disk_usage(path.parent).free
    with path.open("ab") as file:
        size = os.fstat(file.fileno()).st_size + max(0, free - leave)
        try:
            os.posix_fallocate(file.fileno(), 0, size)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def fill_up(path: Path) -> None:
    """Leave no block free at all."""
    fill(path, 0)
    with path.open("ab") as file:
        try:
            while True:
                file.write(b"\0" * 4096)
                file.flush()
                os.fsync(file.fileno())
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
