"""A fleet node's memory in ``make bench``: peak RSS of one node against file size.

Part of the memory section. One SeaweedFS and one PostgreSQL are started for it, and one
``freight serve --store s3://BUCKET/bench --db ... --part-size P`` node; every file of the
memory section (256 MiB, 1 GiB and 4 GiB) is then sent to that node by curl as one tus
PATCH. Per upload: the node's ``VmHWM`` is reset (``clear_refs`` 5) before and read after
it, with its CPU seconds; then the new object in the bucket must have the file's size and
SHA-256, and the upload is deleted (objects left over too) and SeaweedFS vacuumed, so the
next upload starts on the same empty store.

The issue's bound: a node peaks under 64 MiB for a 4 GiB upload, flat in file size.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import clients, s3_client
from bench.clients import ClientError
from bench.measure import MiB, reset_peak_rss, snapshot
from bench.model import Results
from bench.peers import Peer, Unavailable, start_freight
from bench.s3_services import ACCESS_KEY, SECRET_KEY, Seaweed, start_postgres, start_seaweed
from bench.suite import Source, delete_from_freight, transfer_timeout

__all__ = [
    "FLAT_MIB",
    "NAME",
    "PEAK_LIMIT_MIB",
    "FleetNode",
    "measure_fleet_upload",
    "start_fleet_node",
]

NAME = "freight fleet node"
BUCKET = "bench-fleet-memory"
KEYS = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
PEAK_LIMIT_MIB = 64.0
FLAT_MIB = 2.0

Log = Callable[[str], None]


@dataclass(frozen=True)
class FleetNode:
    node: Peer
    store: Seaweed
    part_size: int


def start_fleet_node(stack: ExitStack, work: Path, part_size: int) -> FleetNode:
    """SeaweedFS, PostgreSQL and one node on them, stopped by ``stack``."""
    if importlib.util.find_spec("aiobotocore") is None:
        raise Unavailable("aiobotocore is not installed (pip install -e '.[bench]')")
    directory = work / "fleet-memory"
    store = start_seaweed(directory)
    stack.callback(store.stop)
    s3_client.create_buckets(store.url, [BUCKET])
    pg = start_postgres()
    stack.callback(pg.stop)
    args = [f"--store=s3://{BUCKET}/bench", f"--s3-endpoint={store.url}", f"--db={pg.dsn}"]
    args.append(f"--part-size={part_size}")
    node = start_freight(
        directory, "batch", name="freight-fleet", tcp=False, extra_args=tuple(args), env=KEYS
    )
    stack.callback(node.stop)
    return FleetNode(node, store, part_size)


def measure_fleet_upload(fleet: FleetNode, source: Source) -> dict[str, Any]:
    """One tus upload of ``source`` through the node; a row of ``Results.fleet_memory``."""
    node, store = fleet.node, fleet.store
    row: dict[str, Any] = {"size": source.size, "part_size": fleet.part_size}
    before = s3_client.list_objects(store.url, BUCKET)
    location = ""
    try:
        if not node.alive():
            raise Unavailable(f"{node.name} is not running: {node.log_tail(5)}")
        row["idle_rss_kib"] = snapshot(node.pid).rss_kib
        reset_peak_rss(node.pids())
        start = snapshot(node.pid)
        timeout = transfer_timeout(source.size)
        transfer = clients.curl_tus(f"{node.url}/files/", source.path, timeout)
        location = transfer.location
        end = snapshot(node.pid)
        row.update(
            seconds=transfer.seconds,
            cpu_seconds=end.cpu_seconds - start.cpu_seconds,
            peak_rss_kib=end.peak_rss_kib,
            after_rss_kib=end.rss_kib,
        )
        _check_object(store, before, source)
        row["ok"] = True
    except (ClientError, Unavailable, OSError) as exc:
        row.update(ok=False, error=f"{type(exc).__name__}: {exc}")
    finally:
        if location:
            delete_from_freight(node, location)
        left = set(s3_client.list_objects(store.url, BUCKET)) - set(before)
        s3_client.delete_objects(store.url, BUCKET, sorted(left))
        with contextlib.suppress(OSError):
            store.vacuum()
    return row


def _check_object(store: Seaweed, before: dict[str, int], source: Source) -> None:
    after = s3_client.list_objects(store.url, BUCKET)
    fresh = [k for k, size in after.items() if k not in before and size == source.size]
    if not any(s3_client.object_sha256(store.url, BUCKET, k) == source.sha256 for k in fresh):
        raise ClientError(f"no new object of {source.size} B with the file's SHA-256")


def describe(row: dict[str, Any]) -> str:
    if not row.get("ok"):
        return f"FAILED {row.get('error', '')}"
    size = row["size"] / (1024 * MiB)
    cpu = row["cpu_seconds"] / size if size else 0.0
    return (
        f"peak RSS {row['peak_rss_kib'] / 1024:.1f} MiB (before {row['idle_rss_kib'] / 1024:.1f}),"
        f" {size / row['seconds']:.2f} GiB/s, server CPU {cpu:.2f} s/GiB"
    )


# --- the report ---------------------------------------------------------------------------


def goals(results: Results) -> list[tuple[str, str, bool | None]]:
    """(goal, measured, met) for the report's goal table."""
    rows = [r for r in results.fleet_memory if r.get("ok")]
    if not results.fleet_memory and NAME not in results.skipped:
        return []  # the memory section did not run
    if not rows:
        reason = results.skipped.get(NAME, "no upload through a fleet node succeeded")
        return [(f"fleet node peak RSS < {PEAK_LIMIT_MIB:.0f} MiB", f"not measured: {reason}",
                 None)]  # fmt: skip
    worst = max(r["peak_rss_kib"] for r in rows) / 1024
    largest = max(rows, key=lambda r: r["size"])
    found = [(f"fleet node peak RSS < {PEAK_LIMIT_MIB:.0f} MiB up to {_size(largest['size'])}",
              f"max {worst:.1f} MiB", worst < PEAK_LIMIT_MIB)]  # fmt: skip
    if len(rows) >= 2:
        smallest = min(rows, key=lambda r: r["size"])
        growth = (largest["peak_rss_kib"] - smallest["peak_rss_kib"]) / 1024
        goal = (
            f"fleet node RSS flat: {_size(largest['size'])} within {FLAT_MIB:.0f} MiB of "
            f"{_size(smallest['size'])}"
        )
        found.append((goal, f"{growth:+.1f} MiB", abs(growth) <= FLAT_MIB))
    return found


def section(results: Results) -> list[str]:
    """The report's table: one row per file size."""
    if not results.fleet_memory and NAME not in results.skipped:
        return []
    lines = ["## A fleet node's memory (SeaweedFS + PostgreSQL, curl tus uploads)", ""]
    if not results.fleet_memory:
        return [*lines, f"Not run: {results.skipped[NAME]}", ""]
    part = results.fleet_memory[0]["part_size"] // MiB
    lines += [
        f"One `freight serve --store s3://... --db postgresql://...` node, {part} MiB parts, "
        "`--fsync batch`; VmHWM reset before each upload.",
        "",
        "| file | RSS before (MiB) | peak RSS (MiB) | GiB/s | server CPU s/GiB | intact |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in results.fleet_memory:
        if not row.get("ok"):
            lines.append(f"| {_size(row['size'])} | - | - | - | - | FAILED {row.get('error')} |")
            continue
        gib = row["size"] / (1024 * MiB)
        lines.append(
            f"| {_size(row['size'])} | {row['idle_rss_kib'] / 1024:.1f} | "
            f"{row['peak_rss_kib'] / 1024:.1f} | {gib / row['seconds']:.2f} | "
            f"{row['cpu_seconds'] / gib:.2f} | ok |"
        )
    return [*lines, ""]


def _size(size: int) -> str:
    gib = 1024 * MiB
    if size >= gib and size % gib == 0:
        return f"{size // gib} GiB"
    if size >= MiB:
        return f"{size / MiB:g} MiB"
    return f"{size / 1024:g} KiB"
