"""The partial file a download fills before it gets its name: one lifecycle for HTTP and TCP.

Name: ``.<start of NAME>.<16 hex of SHA-256(NAME)>.freight-part`` beside the target, at most
255 bytes whatever NAME's length (``NAME.part`` could not exist for a 251-255-byte NAME), and
hidden. It is opened with ``O_NOFOLLOW | O_NONBLOCK`` and then checked: a symbolic link, a
special file (a FIFO, a device), a hard link (``st_nlink > 1``: writing would change
another name's file) or a file of another user is refused and left alone, never truncated
or written through. A regular file of ours is only ever *resumed* when the resume store
says which remote version its bytes came from; otherwise it is truncated and refilled.

Names a server suggests go through :func:`local_name` (no path separators, no ``.``/``..``,
no control or bidi characters, never empty) before they name anything on disk.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import stat
from pathlib import Path

from freight.client.errors import ClientError
from freight.client.writer import fsync_directory
from freight.protocol.metadata import safe_filename

__all__ = ["NAME_MAX", "PART_SUFFIX", "PartFile", "local_name", "named_target", "part_path"]

NAME_MAX = 255  # bytes in one path component on every common filesystem
PART_SUFFIX = ".freight-part"
_HASH_CHARS = 16


def local_name(suggested: str | None, file_id: str) -> str:
    """The file name to save a download under: the server's suggestion made safe, else the
    id made safe, else ``download``."""
    return safe_filename(suggested, safe_filename(file_id, "download"))


def named_target(directory: Path | None, name: str, *, overwrite: bool) -> Path:
    """Where a download the server names ``name`` goes in ``directory`` (the working
    directory by default); an existing file there is replaced only with ``overwrite``."""
    target = (directory or Path.cwd()) / name
    if os.path.lexists(target) and not overwrite:
        raise ClientError(
            f"{target} already exists; choose another name with -o or replace it with --force"
        )
    return target


def part_path(target: Path) -> Path:
    """Where the bytes of ``target`` wait until they are complete and verified."""
    raw = os.fsencode(target.name)
    digest = hashlib.sha256(raw).hexdigest()[:_HASH_CHARS]
    room = NAME_MAX - len(f"..{digest}{PART_SUFFIX}")
    prefix = raw[:room].decode("utf-8", "ignore").lstrip(".")
    return target.with_name(f".{prefix}.{digest}{PART_SUFFIX}")


class PartFile:
    """The ``.freight-part`` of one download; :meth:`open` before use, then :meth:`commit`
    (it becomes the target) or :meth:`discard`, and :meth:`close` in any case."""

    def __init__(self, target: Path) -> None:
        self.target = target
        self.path = part_path(target)
        self.fd = -1

    def open(self) -> int:
        """Open (or create) the part file safely; returns how many bytes it holds."""
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ClientError(
                    f"{self.path} is a symbolic link; not writing through it (remove it)"
                ) from None
            raise
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1 or not _ours(info):
                raise ClientError(
                    f"{self.path} is not a partial download of this user's (a special file, "
                    "a hard link or someone else's file); remove it to download here"
                )
            # Non-blocking only mattered while it could have been a FIFO.
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        return info.st_size

    def truncate(self) -> None:
        os.ftruncate(self.fd, 0)

    def commit(self) -> None:
        """Make the bytes durable and give them the target's name."""
        os.fsync(self.fd)
        self.close()
        os.replace(self.path, self.target)
        fsync_directory(self.target.parent)

    def discard(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _ours(info: os.stat_result) -> bool:
    geteuid = getattr(os, "geteuid", None)
    return geteuid is None or info.st_uid == geteuid()
