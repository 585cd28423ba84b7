"""One measurement at a time: a timed upload or download, memory scaling, the cgroup test.

A timed upload, for every target alike:

1. write and delete a scratch file of the upload's size in the server's data directory
   (page-cache first touch, see :mod:`bench.measure`);
2. reset the peak RSS of the server's processes and read their CPU seconds;
3. run the client (timed until its last answer); for freight, wait until the upload is
   finished, since a final tus or IETF answer may come while its SHA-256 still settles in
   the background (a plain HEAD of the file waits for that); read CPU seconds and peak RSS
   again, so the server's CPU in that tail counts;
4. find the stored copy among the files that appeared and check its SHA-256;
5. delete it, so every run starts from the same state.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bench import clients
from bench.clients import ClientError, Transfer
from bench.measure import (
    children_cpu_seconds,
    find_stored_copy,
    prewarm_page_cache,
    reset_peak_rss,
    snapshot,
)
from bench.model import Sample
from bench.peers import Peer, Unavailable

__all__ = [
    "Source",
    "concurrent_peak_rss",
    "delete_from_freight",
    "measure_download",
    "measure_upload",
    "transfer_timeout",
]

Action = Callable[[], Transfer]


@dataclass(frozen=True)
class Source:
    """A file to upload and what it must hash to."""

    path: Path
    size: int
    sha256: str


def transfer_timeout(size: int) -> float:
    """Generous but bounded: a minute plus 20 MB/s."""
    return 60.0 + size / 20e6


def _files(directory: Path) -> set[Path]:
    return {p for p in directory.rglob("*") if p.is_file()} if directory.exists() else set()


def _failed(target: str, run: int, size: int, error: BaseException) -> Sample:
    return Sample(target, run, size, ok=False, error=f"{type(error).__name__}: {error}")


def delete_from_freight(peer: Peer, location: str) -> None:
    """Delete an upload by the id at the end of its URL (tus, chunk, ws or tcp alike)."""
    upload_id = location.rstrip("/").rsplit("/", 1)[-1]
    request = urllib.request.Request(f"{peer.url}/api/files/{upload_id}", method="DELETE")
    with contextlib.suppress(OSError), urllib.request.urlopen(request, timeout=30) as reply:
        reply.read()


def wait_finished(peer: Peer, location: str, timeout: float) -> None:
    """Until freight has finished the upload (its file answers a plain HEAD with 200)."""
    upload_id = location.rstrip("/").rsplit("/", 1)[-1]
    request = urllib.request.Request(f"{peer.url}/files/{upload_id}", method="HEAD")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(request, timeout=timeout) as reply:
                if reply.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            if time.monotonic() > deadline:
                raise ClientError(f"the upload was not finished: HTTP {exc.code}") from exc
        time.sleep(0.01)


def _discard(peer: Peer, stored: set[Path], location: str) -> None:
    if peer.name.startswith("freight") and location:
        delete_from_freight(peer, location)
    for path in stored:
        path.unlink(missing_ok=True)


def measure_upload(target: str, run: int, peer: Peer, source: Source, action: Action) -> Sample:
    """One timed upload of ``source`` to ``peer`` by ``action`` (see the module doc)."""
    store = peer.store_dir
    before = _files(store)
    location = ""
    try:
        if not peer.alive():
            raise Unavailable(f"{peer.name} is not running: {peer.log_tail(5)}")
        prewarm_page_cache(store, source.size)
        reset_peak_rss(peer.pids())
        start, client_start = snapshot(peer.pid), children_cpu_seconds()
        transfer = action()
        location = transfer.location
        if peer.name.startswith("freight") and location:
            wait_finished(peer, location, transfer_timeout(source.size))
        end, client_end = snapshot(peer.pid), children_cpu_seconds()
        stored = find_stored_copy(_files(store) - before, source.size, source.sha256)
        if stored is None:
            raise ClientError("no stored file has the source's size and SHA-256")
        if transfer.sha256 and transfer.sha256 != source.sha256:
            raise ClientError(f"the client reported SHA-256 {transfer.sha256}")
        return Sample(
            target,
            run,
            source.size,
            seconds=transfer.seconds,
            cpu_seconds=end.cpu_seconds - start.cpu_seconds,
            system_cpu_seconds=end.system_seconds - start.system_seconds,
            peak_rss_kib=end.peak_rss_kib,
            client_cpu_seconds=client_end - client_start,
        )
    except (ClientError, Unavailable, OSError) as exc:
        return _failed(target, run, source.size, exc)
    finally:
        _discard(peer, _files(store) - before, location)


def measure_download(
    target: str,
    run: int,
    peer: Peer,
    size: int,
    action: Action,
    client_dir: Path | None = None,
) -> Sample:
    """One timed download; ``client_dir`` (where a client writes) gets the warm-up too."""
    try:
        if not peer.alive():
            raise Unavailable(f"{peer.name} is not running: {peer.log_tail(5)}")
        if client_dir is not None:
            prewarm_page_cache(client_dir, size)
        reset_peak_rss(peer.pids())
        start, client_start = snapshot(peer.pid), children_cpu_seconds()
        transfer = action()
        end, client_end = snapshot(peer.pid), children_cpu_seconds()
        if transfer.size != size:
            raise ClientError(f"received {transfer.size} bytes, not {size}")
        return Sample(
            target,
            run,
            size,
            seconds=transfer.seconds,
            cpu_seconds=end.cpu_seconds - start.cpu_seconds,
            system_cpu_seconds=end.system_seconds - start.system_seconds,
            peak_rss_kib=end.peak_rss_kib,
            client_cpu_seconds=client_end - client_start,
        )
    except (ClientError, Unavailable, OSError) as exc:
        return _failed(target, run, size, exc)
    finally:
        if client_dir is not None:
            for path in _files(client_dir):
                path.unlink(missing_ok=True)


def concurrent_peak_rss(peer: Peer, source: Source, uploads: int) -> dict[str, object]:
    """Peak RSS of ``peer`` while ``uploads`` tus uploads of ``source`` run at once."""
    before = _files(peer.store_dir)
    prewarm_page_cache(peer.store_dir, source.size * uploads)
    reset_peak_rss(peer.pids())
    idle = snapshot(peer.pid).rss_kib
    timeout = transfer_timeout(source.size * uploads)
    endpoint = f"{peer.url}/files/"
    with ThreadPoolExecutor(uploads) as pool:
        futures = [
            pool.submit(clients.curl_tus, endpoint, source.path, timeout) for _ in range(uploads)
        ]
        outcomes: list[Transfer | BaseException] = []
        for future in futures:
            try:
                outcomes.append(future.result())
            except (ClientError, OSError) as exc:
                outcomes.append(exc)
    peak = snapshot(peer.pid).peak_rss_kib
    new = _files(peer.store_dir) - before
    intact = sum(1 for p in new if find_stored_copy({p}, source.size, source.sha256) is not None)
    errors = [str(o) for o in outcomes if isinstance(o, BaseException)]
    for outcome in outcomes:
        if isinstance(outcome, Transfer):
            delete_from_freight(peer, outcome.location)
    for path in _files(peer.store_dir) - before:
        path.unlink(missing_ok=True)
    return {
        "label": f"{uploads} concurrent x {source.size} B",
        "size": source.size,
        "uploads": uploads,
        "idle_rss_kib": idle,
        "peak_rss_kib": peak,
        "ok": intact == uploads and not errors,
        "error": json.dumps(errors[:3]) if errors else "",
    }
