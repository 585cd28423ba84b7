"""Where the client remembers unfinished transfers between runs.

Layout: one directory (``$FREIGHT_STATE_DIR``, else ``$XDG_STATE_HOME/freight``, else
``~/.local/state/freight``) holding two small JSON files:

- ``uploads.json``: ``{"version": 1, "entries": [{"path", "size", "mtime_ns", "server",
  "upload_url", "updated"}]}``: the tus upload URL of a local file, valid only while the
  file's absolute path, size and modification time are unchanged and for the same endpoint;
- ``downloads.json``: ``{"version": 1, "entries": [{"part", "url", "etag", "size",
  "updated"}]}``: the ETag a ``.part`` file was started from, so a resume can send
  ``If-Range`` and never splice two versions of a file together.

Every change is a read-modify-write under an exclusive ``flock`` on ``<file>.lock`` (two
``freight`` processes may run at once), written to a temporary file, fsynced and renamed over
the old one, so a crash leaves the old or the new state, never half of one. A damaged file is
treated as empty: losing resume state costs a restart, never a wrong file. Entries untouched
for :data:`MAX_AGE` seconds are dropped (servers expire idle uploads long before that).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from freight.client.writer import fsync_directory

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows has no flock; single-process use is still safe
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "MAX_AGE",
    "DownloadKey",
    "DownloadState",
    "ResumeStore",
    "UploadKey",
    "default_state_dir",
]

MAX_AGE = 30 * 24 * 3600.0
_VERSION = 1
Entry = dict[str, Any]


def default_state_dir() -> Path:
    """``$FREIGHT_STATE_DIR``, else ``$XDG_STATE_HOME/freight``, else ``~/.local/state/freight``."""
    if override := os.environ.get("FREIGHT_STATE_DIR"):
        return Path(override).expanduser()
    if xdg := os.environ.get("XDG_STATE_HOME"):
        return Path(xdg).expanduser() / "freight"
    return Path.home() / ".local" / "state" / "freight"


@dataclass(frozen=True)
class UploadKey:
    """Identifies one version of one local file sent to one endpoint."""

    path: str
    size: int
    mtime_ns: int
    server: str

    @classmethod
    def for_file(cls, path: Path, server: str) -> UploadKey:
        """The key of ``path`` as it is on disk right now."""
        resolved = path.resolve()
        stat = resolved.stat()
        return cls(str(resolved), stat.st_size, stat.st_mtime_ns, server)


@dataclass(frozen=True)
class DownloadKey:
    """Identifies one ``.part`` file filled from one URL."""

    part: str
    url: str

    @classmethod
    def for_part(cls, part: Path, url: str) -> DownloadKey:
        return cls(str(part.resolve()), url)


@dataclass(frozen=True)
class DownloadState:
    """What a partial download was started from."""

    etag: str
    size: int


class ResumeStore:
    """Upload URLs and download validators, persisted in a state directory."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory if directory is not None else default_state_dir()

    # uploads

    def get_upload(self, key: UploadKey) -> str | None:
        """The upload URL remembered for ``key``, if any."""
        entry = self._find(self._read("uploads"), asdict(key))
        return str(entry["upload_url"]) if entry else None

    def put_upload(self, key: UploadKey, upload_url: str) -> None:
        self._upsert("uploads", asdict(key), {"upload_url": upload_url})

    def forget_upload(self, key: UploadKey) -> None:
        self._remove("uploads", asdict(key))

    # downloads

    def get_download(self, key: DownloadKey) -> DownloadState | None:
        entry = self._find(self._read("downloads"), asdict(key))
        if not entry:
            return None
        return DownloadState(etag=str(entry["etag"]), size=int(entry["size"]))

    def put_download(self, key: DownloadKey, state: DownloadState) -> None:
        self._upsert("downloads", asdict(key), asdict(state))

    def forget_download(self, key: DownloadKey) -> None:
        self._remove("downloads", asdict(key))

    # storage

    def _file(self, kind: str) -> Path:
        return self.directory / f"{kind}.json"

    @staticmethod
    def _find(entries: list[Entry], match: Entry) -> Entry | None:
        for entry in entries:
            if all(entry.get(name) == value for name, value in match.items()):
                return entry
        return None

    def _read(self, kind: str) -> list[Entry]:
        try:
            data = json.loads(self._file(kind).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        if not isinstance(data, dict) or data.get("version") != _VERSION:
            return []
        entries = data.get("entries")
        return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []

    def _upsert(self, kind: str, match: Entry, values: Entry) -> None:
        def change(entries: list[Entry]) -> list[Entry]:
            kept = [e for e in entries if self._find([e], match) is None]
            return [*kept, {**match, **values, "updated": time.time()}]

        self._modify(kind, change)

    def _remove(self, kind: str, match: Entry) -> None:
        self._modify(kind, lambda entries: [e for e in entries if self._find([e], match) is None])

    def _modify(self, kind: str, change: Callable[[list[Entry]], list[Entry]]) -> None:
        # Upload URLs are capabilities on a server without a token: keep them private.
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        with self._locked(kind):
            cutoff = time.time() - MAX_AGE
            fresh = [e for e in self._read(kind) if _updated(e) >= cutoff]
            self._write_atomically(
                self._file(kind), {"version": _VERSION, "entries": change(fresh)}
            )

    @contextlib.contextmanager
    def _locked(self, kind: str) -> Iterator[None]:
        with (self.directory / f"{kind}.json.lock").open("a") as lock:
            if fcntl is not None:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            yield  # closing the file releases the lock

    @staticmethod
    def _write_atomically(target: Path, data: Entry) -> None:
        fd, temp_name = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"
        )
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as temp:
                json.dump(data, temp, indent=1)
                temp.flush()
                os.fsync(temp.fileno())
            os.replace(temp_name, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp_name)
            raise
        fsync_directory(target.parent)


def _updated(entry: Entry) -> float:
    value = entry.get("updated")
    return float(value) if isinstance(value, int | float) else 0.0
