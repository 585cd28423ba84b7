"""A small loop-mounted ext4 filesystem for tests that fill a disk (never the real one).

Needs root (``mount``); the mount, the loop device and the image go on exit even when the
test fails.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

MiB = 1024 * 1024

__all__ = ["fill", "fill_up", "loop_ext4", "loop_mounted_ext4"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


@contextlib.contextmanager
def loop_mounted_ext4(directory: Path, size: int) -> Iterator[Path]:
    """Mount a fresh ``size``-byte ext4 at ``directory/mnt``; yields the mount point."""
    image, mount = directory / "disk.img", directory / "mnt"
    mount.mkdir(parents=True)
    with image.open("wb") as file:
        file.truncate(size)
    made = _run("mkfs.ext4", "-q", "-F", "-m", "0", str(image))
    assert made.returncode == 0, made.stderr
    mounted = _run("mount", "-o", "loop", str(image), str(mount))
    assert mounted.returncode == 0, f"mounting a loop device needs root: {mounted.stderr}"
    try:
        yield mount
    finally:
        if _run("umount", str(mount)).returncode != 0:
            _run("umount", "-l", str(mount))
        for line in _run("losetup", "-j", str(image)).stdout.splitlines():
            _run("losetup", "-d", line.split(":", 1)[0])  # mount -o loop usually did it
        image.unlink(missing_ok=True)


def loop_ext4(tmp_path: Path, size: int = 64 * MiB) -> contextlib.AbstractContextManager[Path]:
    """A 64 MiB ext4 filesystem in ``tmp_path``, mounted meanwhile and unmounted after."""
    return loop_mounted_ext4(tmp_path, size)


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
