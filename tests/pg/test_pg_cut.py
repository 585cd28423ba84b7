"""A node cut off from the database (not dead: its packets just stop arriving) loses its
claims within seconds: the server's TCP keepalives and ``tcp_user_timeout`` end its
session, and the node's own heartbeat tells it to stop its writers sooner.

The node is a real process in a network namespace, joined to the host by a veth pair;
the cut takes that link down. Needs root (it skips otherwise).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest

from freight.errors import UploadLocked
from freight.storage.pg_claims import open_pg_claims
from tests.pg_server import PgCluster, find_bindir

_NODE = textwrap.dedent(
    """
    import asyncio, sys
    from freight.storage.pg_claims import open_pg_claims

    async def main(dsn):
        claims = await open_pg_claims(dsn, "cut")
        lost = asyncio.Event()
        await claims.claim("u", 0, 100, lambda rewrites: lost.set())
        print("ready", flush=True)
        await lost.wait()
        print("lost", flush=True)
        await asyncio.sleep(120)

    asyncio.run(main(sys.argv[1]))
    """
)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@pytest.fixture
def namespace() -> Iterator[tuple[str, str, str]]:
    """A network namespace reached through a veth pair: (namespace, host link, host ip)."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 for a network namespace")
    tag = os.getpid() % 100000
    namespace, host, inside = f"frc{tag}", f"frh{tag}", f"frn{tag}"
    net = f"10.213.{tag % 250}"
    try:
        _ip("netns", "add", namespace)
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot add a network namespace: {exc.stderr!r}")
    try:
        _ip("link", "add", host, "type", "veth", "peer", "name", inside)
        _ip("link", "set", inside, "netns", namespace)
        _ip("addr", "add", f"{net}.1/30", "dev", host)
        _ip("link", "set", host, "up")
        _ip("netns", "exec", namespace, "ip", "addr", "add", f"{net}.2/30", "dev", inside)
        _ip("netns", "exec", namespace, "ip", "link", "set", inside, "up")
        _ip("netns", "exec", namespace, "ip", "link", "set", "lo", "up")
        yield namespace, host, f"{net}.1"
    finally:
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=10)
        subprocess.run(["ip", "link", "del", host], capture_output=True, timeout=10)


async def test_a_cut_off_node_loses_its_claims_within_seconds(
    namespace: tuple[str, str, str],
) -> None:
    name, host_link, host_ip = namespace
    bindir = find_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not found")
    cluster = PgCluster(bindir, also_listen=(host_ip,))
    child: subprocess.Popen[bytes] | None = None
    claims = None
    try:
        cluster.init()
        with (cluster.data / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {host_ip.rsplit('.', 1)[0]}.0/30 trust\n")
        cluster.start()
        remote = f"postgresql://postgres@{host_ip}:{cluster.port}/postgres"
        child = subprocess.Popen(
            ["ip", "netns", "exec", name, sys.executable, "-c", _NODE, remote],
            stdout=subprocess.PIPE,
            env=dict(os.environ),
        )
        assert child.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 30)
        assert line.strip() == b"ready"
        claims = await open_pg_claims(cluster.dsn(), "survivor")
        with pytest.raises(UploadLocked):
            await claims.claim("u", 0, 100)
        told = asyncio.ensure_future(asyncio.to_thread(child.stdout.readline))
        _ip("link", "set", host_link, "down")  # the cut: no packets either way
        began = time.monotonic()
        while True:
            try:
                await claims.claim("u", 0, 100)
                break
            except UploadLocked:
                assert time.monotonic() - began < 15, "the cut node's claim still counts"
                await asyncio.sleep(0.1)
        freed = time.monotonic() - began
        assert (await asyncio.wait_for(told, 10)).strip() == b"lost"
        # The server gives up after about 5 s (2 s idle, 3 probes a second apart).
        assert 1 < freed < 12, freed
    finally:
        if child is not None:
            child.kill()
            child.wait(10)
        if claims is not None:
            await claims.close()
        cluster.remove()
