"""Throughput, CPU and peak RSS of S3Blobs against a plain aiobotocore multipart upload of
the same bytes, on one SeaweedFS in the same run (it, not the client, bounds the speed).

    python -m tests.s3.bench_s3 [--size-mib 1024] [--rounds 2]

Each measurement runs in a child process of its own (a clean peak RSS); the parent starts
SeaweedFS and PostgreSQL and adds SeaweedFS's CPU time to each result.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

CHUNK = 1024 * 1024  # what the engine hands a writer at a time
SYNC_EVERY = 64 * 1024 * 1024  # the engine's default
# RSS once the client is open, before the first byte: what the upload itself adds is
# the peak minus this.
_opened_rss: list[float] = []


def opened() -> None:
    _opened_rss.append(psutil.Process().memory_info().rss / (1 << 20))


class FileWindow(io.RawIOBase):
    """The plain client's part body: a file window read in the HTTP client's chunks."""

    def __init__(self, fd: int, start: int, size: int) -> None:
        super().__init__()
        self._fd, self._start, self._size, self._pos = fd, start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        self._pos = offset if whence == 0 else self._size + offset if whence == 2 else self._pos
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        want = min(len(view), self._size - self._pos)
        got = os.preadv(self._fd, [view[:want]], self._start + self._pos) if want > 0 else 0
        self._pos += got
        return got


async def direct(env: dict[str, str], source: Path, size: int, part: int) -> None:
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    config = AioConfig(
        signature_version="s3v4",
        s3={"addressing_style": "path", "payload_signing_enabled": False},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        max_pool_connections=16,
    )
    async with get_session().create_client(
        "s3",
        endpoint_url=env["endpoint"],
        region_name="us-east-1",
        aws_access_key_id=env["key"],
        aws_secret_access_key=env["secret"],
        config=config,
    ) as client:
        key = "direct"
        opened()
        created = await client.create_multipart_upload(Bucket=env["bucket"], Key=key)
        fd = os.open(source, os.O_RDONLY)
        gate = asyncio.Semaphore(4)

        async def one(number: int) -> dict[str, Any]:
            start = (number - 1) * part
            length = min(part, size - start)
            async with gate:
                answer = await client.upload_part(
                    Bucket=env["bucket"],
                    Key=key,
                    UploadId=created["UploadId"],
                    PartNumber=number,
                    Body=FileWindow(fd, start, length),
                    ContentLength=length,
                )
            return {"PartNumber": number, "ETag": answer["ETag"]}

        parts = await asyncio.gather(*(one(n) for n in range(1, -(-size // part) + 1)))
        await client.complete_multipart_upload(
            Bucket=env["bucket"],
            Key=key,
            UploadId=created["UploadId"],
            MultipartUpload={"Parts": list(parts)},
        )
        os.close(fd)


async def freight(env: dict[str, str], source: Path, size: int, part: int) -> None:
    from freight.storage.pg_parts import open_pg_part_table
    from freight.storage.s3_blobs import S3Blobs

    spool = Path(env["spool"])
    store = await S3Blobs.open(
        endpoint=env["endpoint"],
        access_key=env["key"],
        secret_key=env["secret"],
        bucket=env["bucket"],
        spool_dir=spool,
        open_table=lambda: open_pg_part_table(env["dsn"]),
        max_size=4 << 30,
        part_size=part,
    )
    try:
        opened()
        await store.create("freight")
        writer = await store.open_writer("freight")
        buffer = bytearray(CHUNK)
        with open(source, "rb", buffering=0) as file:
            at = 0
            while got := file.readinto(buffer):
                await asyncio.to_thread(writer.write_at, at, memoryview(buffer)[:got])
                at += got
                if at % SYNC_EVERY == 0 or at == size:
                    await asyncio.to_thread(writer.sync)
        await asyncio.to_thread(writer.close)
        await store.finish("freight", size)
        assert not any(spool.iterdir()), "spool not empty after finish"
    finally:
        await store.close()


def child(mode: str, env: dict[str, str], source: Path, size: int, part: int) -> None:
    run = direct if mode == "direct" else freight
    started, cpu = time.perf_counter(), os.times()
    asyncio.run(run(env, source, size, part))
    after = os.times()
    result = {
        "wall": time.perf_counter() - started,
        "cpu": after.user + after.system - cpu.user - cpu.system,
        "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "opened_rss_mib": _opened_rss[0],
    }
    print(json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--part-mib", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--modes", default="direct,freight")
    parser.add_argument("--child", nargs=2)
    args = parser.parse_args()
    size, part = args.size_mib * 1024 * 1024, args.part_mib * 1024 * 1024
    if args.child:
        mode, source = args.child
        child(mode, json.loads(os.environ["BENCH_ENV"]), Path(source), size, part)
        return
    asyncio.run(orchestrate(args, size, part))


async def orchestrate(args: argparse.Namespace, size: int, part: int) -> None:
    from tests.pg_server import start_cluster
    from tests.s3.seaweed import start_seaweed
    from tests.s3.stores import s3_client

    root = Path(tempfile.mkdtemp(prefix="bench-s3-"))
    weed = start_seaweed(root / "weed")
    cluster, _ = start_cluster()
    try:
        source = root / "source"
        with open(source, "wb") as file:
            block = os.urandom(CHUNK)
            for _ in range(size // CHUNK):
                file.write(block)
        rows = []
        for n in range(args.rounds):
            for mode in args.modes.split(","):
                bucket = f"bench-{mode}-{n}"
                async with s3_client(weed) as client:
                    await client.create_bucket(Bucket=bucket)
                env = {
                    "endpoint": weed.endpoint,
                    "key": weed.access_key,
                    "secret": weed.secret_key,
                    "bucket": bucket,
                    "dsn": cluster.dsn(),
                    "spool": str(root / "spool"),
                }
                weed_cpu = psutil.Process(weed.proc.pid).cpu_times()
                out = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "tests.s3.bench_s3",
                        "--size-mib",
                        str(args.size_mib),
                        "--part-mib",
                        str(args.part_mib),
                        "--child",
                        mode,
                        str(source),
                    ],
                    env={**os.environ, "BENCH_ENV": json.dumps(env)},
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                later = psutil.Process(weed.proc.pid).cpu_times()
                row = json.loads(out.strip().splitlines()[-1])
                gib = size / (1 << 30)
                row.update(
                    mode=mode,
                    mib_s=size / (1 << 20) / row["wall"],
                    cpu_s_per_gib=row["cpu"] / gib,
                    weed_cpu_s_per_gib=(later.user + later.system - weed_cpu.user - weed_cpu.system)
                    / gib,
                )
                rows.append(row)
                print(
                    json.dumps(
                        {k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}
                    ),
                    flush=True,
                )
    finally:
        weed.stop()
        cluster.remove()
        subprocess.run(["rm", "-rf", str(root)], check=False)


if __name__ == "__main__":
    main()
