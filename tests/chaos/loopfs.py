"""A small ext4 filesystem in a loop-mounted file, for running a server out of disk space.

Needs root (``mount``); the image, the mount and the loop device are removed on exit even
when the test fails.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

__all__ = ["fill", "loop_mounted_ext4"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


@contextlib.contextmanager
def loop_mounted_ext4(directory: Path, size: int) -> Iterator[Path]:
    """Mount a fresh ``size``-byte ext4 at ``directory/mnt``; yields the mount point."""
    image = directory / "disk.img"
    mount = directory / "mnt"
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


def fill(path: Path, leave: int) -> int:
    """Write ``path`` until its filesystem has about ``leave`` bytes free; returns its size."""
    block = b"\xa5" * (1024 * 1024)
    written = 0
    with path.open("wb", buffering=0) as file:
        while True:
            stat = os.statvfs(path)
            free = stat.f_bavail * stat.f_frsize
            if free - len(block) < leave:
                tail = max(0, free - leave)
                if tail:
                    with contextlib.suppress(OSError):
                        written += file.write(block[:tail]) or 0
                break
            written += file.write(block) or 0
    return written
