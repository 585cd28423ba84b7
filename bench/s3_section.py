"""The S3 section of ``make bench``: uploads into one SeaweedFS, three ways, in the same run.

One SeaweedFS (``weed mini``) and one PostgreSQL are started for the section, with a bucket
per target, and then:

- **freight node**: ``freight serve --store s3://BUCKET/bench --db ... --part-size P``
  receiving one tus PATCH of the whole file from curl (its spool is its data directory),
  and the same file by ``freight send --protocol chunks --parallel 4`` (a chunk is a part);
- **direct**: the same bytes sent straight to the store by ``python -m bench.s3_client put``,
  an aiobotocore multipart upload of P-byte parts, a few in flight: the ceiling;
- **@tus/server + @tus/s3-store** (``bench/node/tus_s3_server.mjs``, P-byte parts staged in
  its own temporary directory) receiving the same tus PATCH from curl.

Every round runs each target once (rounds interleaved). Per upload: the page-cache warm-up
in SeaweedFS's directory and in the server's staging directory, the server's and SeaweedFS's
CPU seconds and the server's peak RSS around the timed transfer, then the new object of the
file's size is read back from the bucket and its SHA-256 compared with the source's, and
everything the upload left in the bucket is deleted, and SeaweedFS vacuumed.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from bench import clients, s3_client
from bench.clients import ClientError, Transfer
from bench.measure import (
    MiB,
    children_cpu_seconds,
    prewarm_page_cache,
    reset_peak_rss,
    snapshot,
)
from bench.model import Results, Sample, Target
from bench.peers import (
    NODE_DIR,
    Peer,
    Unavailable,
    free_port,
    launch,
    node_for_tus,
    start_freight,
    wait_ready,
)
from bench.s3_services import ACCESS_KEY, SECRET_KEY, Seaweed, start_postgres, start_seaweed
from bench.suite import Source, delete_from_freight, transfer_timeout

__all__ = [
    "DIRECT",
    "FREIGHT",
    "FREIGHT_CHUNKS",
    "SECTION",
    "TARGETS",
    "TUS_S3",
    "S3Options",
    "run_s3_section",
]

SECTION = "s3"
FREIGHT = "S3: freight tus PATCH"
FREIGHT_CHUNKS = "S3: freight chunks x4"
DIRECT = "S3: direct aiobotocore multipart"
TUS_S3 = "S3: @tus/server + s3-store PATCH"
TARGETS = (FREIGHT, FREIGHT_CHUNKS, DIRECT, TUS_S3)
BUCKETS = {FREIGHT: "bench-freight", DIRECT: "bench-direct", TUS_S3: "bench-tus"}
KEYS = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
# How long a finished object may take to appear after the client's last answer.
VISIBLE_WITHIN = 30.0

Log = Callable[[str], None]


@dataclass(frozen=True)
class S3Options:
    runs: int
    part_size: int = 8 * MiB
    concurrency: int = 4  # the direct uploader's parts in flight
    only: tuple[str, ...] = ()  # targets whose names hold one of these (all when empty)

    def wanted(self, name: str) -> bool:
        return not self.only or any(part in name for part in self.only)


@dataclass(frozen=True)
class Row:
    """One target: how to send, where it lands, whose CPU and memory are the server's."""

    target: Target
    bucket: str
    send: Callable[[], Transfer]
    server: Peer | None  # None: no server between the client and the store
    staging: Path | None  # where the server stages bytes (page-cache warm-up)


def start_tus_s3(work: Path, endpoint: str, bucket: str, part_size: int) -> Peer:
    node = node_for_tus()
    directory = work / "node-tus-s3"
    staging = directory / "tmp"
    staging.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [node, str(NODE_DIR / "tus_s3_server.mjs"), str(port), endpoint, bucket]
    process, log = launch(
        [*command, str(part_size)], directory, env={**KEYS, "TMPDIR": str(staging)}
    )
    peer = Peer("@tus/server s3-store", process, f"http://127.0.0.1:{port}/files", staging, log)
    return wait_ready(peer, None, port, 30.0)


def direct_upload(endpoint: str, bucket: str, source: Source, options: S3Options) -> Transfer:
    """One multipart upload by ``bench.s3_client`` in a process of its own."""
    key = f"direct-{time.monotonic_ns()}"
    command = [sys.executable, "-m", "bench.s3_client", "put", endpoint, bucket, key]
    command += [str(source.path), "--part-size", str(options.part_size)]
    command += ["--concurrency", str(options.concurrency)]
    timeout = transfer_timeout(source.size)
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False,
            env={**os.environ, **KEYS}, cwd=Path(__file__).resolve().parents[1],
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise ClientError(f"the direct upload timed out after {timeout:.0f} s") from exc
    if done.returncode != 0:
        raise ClientError(f"the direct upload failed: {done.stderr.strip()[-400:]}")
    reply = json.loads(done.stdout)
    return Transfer(
        float(reply["seconds"]), int(reply["size"]), location=key, cpu_seconds=reply["cpu_seconds"]
    )


def _find_object(endpoint: str, bucket: str, before: dict[str, int], source: Source) -> str:
    """The key of the new object holding the source's bytes; waits a little for it."""
    deadline = time.monotonic() + VISIBLE_WITHIN
    while True:
        after = s3_client.list_objects(endpoint, bucket)
        fresh = sorted(k for k, size in after.items() if k not in before and size == source.size)
        digests = {key: s3_client.object_sha256(endpoint, bucket, key) for key in fresh}
        for key, digest in digests.items():
            if digest == source.sha256:
                return key
        if digests:
            raise ClientError(f"no new object has the source's SHA-256: {digests}")
        if time.monotonic() > deadline:
            raise ClientError(f"no new object of {source.size} B in bucket {bucket}")
        time.sleep(0.5)


def measure_s3_upload(run: int, row: Row, store: Seaweed, source: Source) -> Sample:
    """One timed upload of ``row``; the module doc says what is measured around it."""
    s3, name = s3_client, row.target.name
    before = s3.list_objects(store.url, row.bucket)
    location = ""
    try:
        for peer in (store, row.server):
            if peer is not None and not peer.alive():
                raise Unavailable(f"{peer.name} is not running: {peer.log_tail(5)}")
        prewarm_page_cache(store.store_dir, source.size)
        if row.staging is not None:
            prewarm_page_cache(row.staging, source.size)
        watched = row.server or store
        reset_peak_rss(watched.pids())
        start, store_start = snapshot(watched.pid), snapshot(store.pid)
        client_start = children_cpu_seconds()
        transfer = row.send()
        location = transfer.location
        end, store_end = snapshot(watched.pid), snapshot(store.pid)
        client_end = children_cpu_seconds()
        if transfer.sha256 and transfer.sha256 != source.sha256:
            raise ClientError(f"the client reported SHA-256 {transfer.sha256}")
        _find_object(store.url, row.bucket, before, source)
        return Sample(
            name,
            run,
            source.size,
            seconds=transfer.seconds,
            cpu_seconds=end.cpu_seconds - start.cpu_seconds if row.server else None,
            peak_rss_kib=end.peak_rss_kib if row.server else None,
            client_cpu_seconds=(
                client_end - client_start if transfer.cpu_seconds is None else transfer.cpu_seconds
            ),
            store_cpu_seconds=store_end.cpu_seconds - store_start.cpu_seconds,
        )
    except (ClientError, Unavailable, OSError) as exc:
        return Sample(name, run, source.size, ok=False, error=f"{type(exc).__name__}: {exc}")
    finally:
        if row.server is not None and row.server.name.startswith("freight") and location:
            delete_from_freight(row.server, location)
        left = set(s3.list_objects(store.url, row.bucket)) - set(before)
        s3.delete_objects(store.url, row.bucket, sorted(left))
        with contextlib.suppress(OSError):
            store.vacuum()


def start_freight_node(stack: ExitStack, work: Path, endpoint: str, options: S3Options) -> Peer:
    """A freight node on its own PostgreSQL, storing into the freight bucket."""
    pg = start_postgres()
    stack.callback(pg.stop)
    fleet = (f"--store=s3://{BUCKETS[FREIGHT]}/bench", f"--s3-endpoint={endpoint}")
    fleet += (f"--db={pg.dsn}", f"--part-size={options.part_size}")
    node = start_freight(work, "batch", name="freight-s3", tcp=False, extra_args=fleet, env=KEYS)
    stack.callback(node.stop)
    return node


def _rows(
    stack: ExitStack, work: Path, store: Peer, source: Source, options: S3Options, log: Log
) -> tuple[list[Row], dict[str, str]]:
    """Start the servers in front of the store; a target that cannot start is skipped."""
    rows: list[Row] = []
    skipped: dict[str, str] = {}
    timeout = transfer_timeout(source.size)
    client = "curl POST + PATCH -T"
    try:
        node = start_freight_node(stack, work, store.url, options)
    except Unavailable as exc:
        skipped[FREIGHT] = skipped[FREIGHT_CHUNKS] = str(exc)
    else:
        log(f"started freight-s3 at {node.url}")
        send = functools.partial(clients.curl_tus, f"{node.url}/files/", source.path, timeout)
        target = Target(FREIGHT, "s3", node.name, syncs=node.syncs, client=client)
        rows.append(Row(target, BUCKETS[FREIGHT], send, node, node.store_dir / "spool"))
        send = functools.partial(clients.freight_send, node.url, source.path, "chunks", 4, timeout)
        chunks = "freight send --protocol chunks --parallel 4"
        target = Target(FREIGHT_CHUNKS, "s3", node.name, syncs=node.syncs, client=chunks)
        rows.append(Row(target, BUCKETS[FREIGHT], send, node, node.store_dir / "spool"))
    parts = f"{options.part_size // MiB} MiB parts, {options.concurrency} in flight"
    direct = Target(DIRECT, "s3", "seaweedfs", client=f"bench.s3_client put ({parts})")
    upload = functools.partial(direct_upload, store.url, BUCKETS[DIRECT], source, options)
    rows.append(Row(direct, BUCKETS[DIRECT], upload, None, None))
    try:
        tus = start_tus_s3(work, store.url, BUCKETS[TUS_S3], options.part_size)
    except Unavailable as exc:
        skipped[TUS_S3] = str(exc)
    else:
        stack.callback(tus.stop)
        log(f"started {tus.name} at {tus.url}")
        send = functools.partial(clients.curl_tus, f"{tus.url}/", source.path, timeout)
        target = Target(TUS_S3, "s3", tus.name, syncs="no (parts staged in TMPDIR)", client=client)
        rows.append(Row(target, BUCKETS[TUS_S3], send, tus, tus.store_dir))
    return rows, skipped


def run_s3_section(
    results: Results, work: Path, source: Source, options: S3Options, log: Log
) -> None:
    """Measure every S3 target ``options.runs`` times into ``results``."""
    if importlib.util.find_spec("aiobotocore") is None:
        results.skipped[SECTION] = "aiobotocore is not installed (pip install -e '.[bench]')"
        return
    with ExitStack() as stack:
        try:
            store = start_seaweed(work)
            stack.callback(store.stop)
            log(f"started SeaweedFS at {store.url}")
            s3_client.create_buckets(store.url, BUCKETS.values())
            rows, skipped = _rows(stack, work / "s3", store, source, options, log)
        except Unavailable as exc:
            results.skipped[SECTION] = str(exc)
            log(f"skipped the S3 section: {exc}")
            return
        for name, reason in skipped.items():
            results.skipped[name] = reason
            log(f"skipped {name}: {reason}")
        rows = [row for row in rows if options.wanted(row.target.name)]
        for row in rows:
            results.add_target(row.target)
        for run in range(1, options.runs + 1):
            log(f"S3 round {run}/{options.runs}: {len(rows)} targets")
            for row in rows:
                sample = measure_s3_upload(run, row, store, source)
                results.samples.append(sample)
                log(f"  {row.target.name}: {_describe(sample)}")


def _describe(sample: Sample) -> str:
    if not sample.ok:
        return f"FAILED {sample.error}"
    parts = [f"{sample.gib_per_s or 0:.2f} GiB/s"]
    for label, value in (
        ("server", sample.cpu_per_gib),
        ("client", sample.client_cpu_per_gib),
        ("SeaweedFS", sample.store_cpu_per_gib),
    ):
        if value is not None:
            parts.append(f"{label} CPU {value:.2f} s/GiB")
    if sample.peak_rss_kib:
        parts.append(f"RSS {sample.peak_rss_kib / 1024:.1f} MiB")
    return ", ".join(parts)
