"""freight's WebSocket uploads beside the naive design they replace, on loopback.

The naive design (the NAS uploader freight grew from): 512 KiB binary chunks, one in flight,
the server answers "next" after saving each chunk as its own file, and merges the chunk
files into the result at the end, so every byte is written twice. It has no resume, no
SHA-256 and no durability; freight's figures include all three (SHA-256 of every byte,
fsync per 16 MiB window with the default ``--fsync batch``, SQLite bookkeeping).

Each variant runs in its own server subprocess; the client runs here. Reported: wall-clock
throughput, the server's CPU seconds (user + system, all threads, from /proc) per GiB and
the client's (this process, all threads, from ``getrusage``). The machine may be shared, so
every variant runs ``--repeat`` times and ranges are shown.

    .venv/bin/python -m bench.ws_naive [--size-mib 1024] [--repeat 3] [--rtt-ms 0]

``--rtt-ms`` puts a proxy adding that round-trip time in front of each server (stop-and-wait
pays it once per chunk; credit flow control once per credit).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

MiB = 1024 * 1024
NAIVE_CHUNK = 512 * 1024


# the naive server ------------------------------------------------------------------------


async def naive_endpoint(request: web.Request) -> web.WebSocketResponse:
    """One upload: a JSON header, chunks each acknowledged with "next", then a merge."""
    ws = web.WebSocketResponse(max_msg_size=0, compress=False)  # the original had no limit
    await ws.prepare(request)
    data_dir: Path = request.app["data_dir"]
    header = await ws.receive_json()
    chunks = data_dir / "chunks"
    chunks.mkdir(parents=True, exist_ok=True)
    received, count = 0, 0
    while received < header["size"]:
        msg = await ws.receive()
        if msg.type is not aiohttp.WSMsgType.BINARY:
            return ws  # a disconnect: the original deleted everything here
        (chunks / f"{count:08d}").write_bytes(msg.data)
        received += len(msg.data)
        count += 1
        await ws.send_str("next")
    await asyncio.to_thread(_merge, chunks, data_dir / header["name"], count)
    await ws.send_str("done")
    await ws.close()
    return ws


def _merge(chunks: Path, target: Path, count: int) -> None:
    with target.open("wb") as out:
        for index in range(count):
            part = chunks / f"{index:08d}"
            out.write(part.read_bytes())
            part.unlink()


def run_naive_server(data_dir: Path) -> None:
    app = web.Application()
    app["data_dir"] = data_dir
    app.router.add_get("/naive", naive_endpoint)

    web.run_app(app, host="127.0.0.1", port=int(os.environ["NAIVE_PORT"]), print=None)


async def naive_client(path: Path, url: str) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(f"{url}/naive") as ws:
        await ws.send_json({"name": path.name, "size": path.stat().st_size})
        with path.open("rb") as file:
            while chunk := file.read(NAIVE_CHUNK):
                await ws.send_bytes(chunk)
                reply = await ws.receive()
                assert reply.data == "next", reply
        reply = await ws.receive()
        assert reply.data == "done", reply


async def freight_client(path: Path, url: str) -> None:
    from freight.client.ws import upload_file_ws

    await upload_file_ws(path, url)


# a link with latency ---------------------------------------------------------------------


async def delayed_pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float
) -> None:
    """Forward bytes, each arriving ``delay`` seconds after it was read (order kept)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await queue.get()
            await asyncio.sleep(max(0.0, due - loop.time()))
            if not data:
                writer.close()
                return
            writer.write(data)
            await writer.drain()

    delivering = asyncio.ensure_future(deliver())
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(256 * 1024):
            queue.put_nowait((loop.time() + delay, data))
    queue.put_nowait((loop.time() + delay, b""))
    with contextlib.suppress(ConnectionError):
        await delivering


def run_delay_proxy(listen: int, upstream: int, rtt: float) -> None:
    """A TCP proxy adding ``rtt / 2`` of latency each way, like a long link."""

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", upstream)
        await asyncio.gather(
            delayed_pipe(client_r, server_w, rtt / 2), delayed_pipe(server_r, client_w, rtt / 2)
        )

    async def serve() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", listen)
        await server.serve_forever()

    asyncio.run(serve())


# measuring ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    name: str
    server_args: list[str]
    client: Callable[[Path, str], Coroutine[Any, Any, None]]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(variant: Variant, data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {**os.environ, "NAIVE_PORT": str(port), "PYTHONUNBUFFERED": "1"}
    args = [a.format(data_dir=data_dir, port=port) for a in variant.server_args]
    proc = subprocess.Popen(
        [sys.executable, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    try:
        _wait_for_port(port)
    except RuntimeError:
        proc.kill()
        raise
    return proc, f"http://127.0.0.1:{port}"


def _wait_for_port(port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def start_proxy(upstream_url: str, rtt_ms: float) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    upstream = upstream_url.rsplit(":", 1)[1]
    args = ["-m", "bench.ws_naive", "--proxy", f"{port}:{upstream}:{rtt_ms}"]
    proc = subprocess.Popen([sys.executable, *args])
    _wait_for_port(port)
    return proc, f"http://127.0.0.1:{port}"


@dataclass(frozen=True)
class Run:
    rate: float  # MiB/s
    server_cpu: float  # CPU seconds per GiB
    client_cpu: float


def measure(variant: Variant, path: Path, scratch: Path, rtt_ms: float) -> Run:
    """One upload, timed and costed."""
    data_dir = scratch / variant.name.replace(" ", "-")
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    proc, url = start_server(variant, data_dir)
    proxy = None
    if rtt_ms > 0:
        proxy, url = start_proxy(url, rtt_ms)
    try:
        before, own_before = cpu_seconds(proc.pid), own_cpu_seconds()
        started = time.perf_counter()
        asyncio.run(variant.client(path, url))
        seconds = time.perf_counter() - started
        used = cpu_seconds(proc.pid) - before
        own = own_cpu_seconds() - own_before
    finally:
        for each in (proc, proxy):
            if each is not None:
                each.terminate()
                each.wait(10)
        shutil.rmtree(data_dir, ignore_errors=True)
    gib = path.stat().st_size / (1024 * MiB)
    return Run(gib * 1024 / seconds, used / gib, own / gib)


FREIGHT_SERVE = ["-m", "freight", "serve", "--port", "{port}", "--data-dir", "{data_dir}"]
VARIANTS = [
    Variant("naive stop-and-wait", ["-m", "bench.ws_naive", "--serve", "{data_dir}"], naive_client),
    Variant(
        "freight ws, fsync batch",
        FREIGHT_SERVE,
        freight_client,
    ),
    Variant(
        "freight ws, fsync never",
        [*FREIGHT_SERVE, "--fsync", "never"],
        freight_client,
    ),
]


def make_file(path: Path, size: int) -> None:
    with path.open("wb") as out:
        block = os.urandom(MiB)
        for index in range(size // MiB):
            out.write(index.to_bytes(8, "big") + block[8:])
        out.write(os.urandom(size % MiB))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rtt-ms", type=float, default=0.0, help="add latency (a proxy)")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--proxy", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        run_naive_server(args.serve)
        return
    if args.proxy is not None:
        listen, upstream, rtt_ms = args.proxy.split(":")
        run_delay_proxy(int(listen), int(upstream), float(rtt_ms) / 1000)
        return
    with tempfile.TemporaryDirectory(prefix="ws-bench-") as scratch_dir:
        scratch = Path(scratch_dir)
        path = scratch / "upload.bin"
        make_file(path, args.size_mib * MiB)
        results: dict[str, list[Run]] = {v.name: [] for v in VARIANTS}
        for round_ in range(args.repeat):
            for variant in VARIANTS:  # interleaved, so load changes hit every variant alike
                run = measure(variant, path, scratch, args.rtt_ms)
                results[variant.name].append(run)
                print(
                    f"round {round_ + 1}: {variant.name}: {run.rate:.0f} MiB/s, server "
                    f"{run.server_cpu:.2f} s/GiB, client {run.client_cpu:.2f} s/GiB"
                )
        link = f"loopback + {args.rtt_ms:g} ms RTT" if args.rtt_ms else "loopback"
        print(f"\n{args.size_mib} MiB upload on {link}, {args.repeat} runs each (min-max):")
        for name, runs in results.items():
            rates = [r.rate for r in runs]
            server = [r.server_cpu for r in runs]
            client = [r.client_cpu for r in runs]
            print(
                f"  {name:26} {min(rates):6.0f}-{max(rates):<6.0f} MiB/s   "
                f"server CPU {min(server):.2f}-{max(server):.2f} s/GiB   "
                f"client CPU {min(client):.2f}-{max(client):.2f} s/GiB"
            )


if __name__ == "__main__":
    main()
