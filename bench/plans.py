"""What to measure: one :class:`Plan` per target, built for the servers that did start.

Uploads: nginx WebDAV PUT, @tus/server and tuspyserver PATCH (all with curl), and every
freight path (tus PATCH with curl; chunk API, WebSocket and TCP with ``freight send``) at
every ``--fsync`` policy. Downloads: nginx, ``http.server`` and freight over HTTP with curl,
freight over TCP with ``freight get``. A target whose server or protocol is missing is
recorded in ``Results.skipped`` with the reason instead.
"""

from __future__ import annotations

import functools
import itertools
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench import clients
from bench.clients import ClientError, Transfer
from bench.model import Results, Sample, Target
from bench.peers import Peer, freight_features
from bench.suite import Source, measure_download, measure_upload, transfer_timeout

__all__ = [
    "FREIGHT_PROTOCOLS",
    "FSYNC_POLICIES",
    "NO_SHA256_PEER",
    "SEND_TUS",
    "TUS_NO_SHA256",
    "Plan",
    "Planner",
    "target_names",
]

FSYNC_POLICIES = ("never", "batch", "always")
FREIGHT_PROTOCOLS = (  # (label, protocol, parallel streams)
    ("tus PATCH", "tus", 1),
    ("chunks x4", "chunks", 4),
    ("ws", "ws", 1),
    ("tcp", "tcp", 1),
)


# freight's own tus client, for its client CPU beside curl's (issue 15): one policy is enough.
SEND_TUS = "freight send tus [never]"

# The same server doing the peers' work: no running SHA-256 (``--no-sha256``), no fsync.
NO_SHA256_PEER = "freight-never-no-sha256"
TUS_NO_SHA256 = "freight tus PATCH [never, --no-sha256]"


def target_names() -> list[str]:
    """Every transfer target a run plans, in report order (the smoke test checks each)."""
    names = ["nginx PUT", "@tus/server PATCH", "tuspyserver PATCH"]
    names += [
        f"freight {label} [{fsync}]"
        for fsync in FSYNC_POLICIES
        for label, _, _ in FREIGHT_PROTOCOLS
    ]
    names += [SEND_TUS, TUS_NO_SHA256]
    return [*names, "nginx GET", "http.server GET", "freight GET", "freight tcp get"]


@dataclass
class Plan:
    """How to run one target once."""

    target: Target
    peer: Peer
    run_once: Callable[[int], Sample]


@dataclass
class Planner:
    """Builds the plans for the servers in ``peers``; notes what it must skip in ``results``."""

    peers: dict[str, Peer]
    results: Results
    work: Path
    counter: Iterator[int] = field(default_factory=itertools.count)

    def missing(self, key: str, *targets: str) -> None:
        """Mark the targets of a server that could not start as skipped, saying why."""
        for target in targets:
            self.results.skipped[target] = f"{key} unavailable: {self.results.skipped.get(key)}"

    def upload_plan(
        self, name: str, peer: Peer, source: Source, send: Callable[[], Transfer], client: str
    ) -> Plan:
        target = Target(name, "upload", peer.name, syncs=peer.syncs, client=client)
        return Plan(target, peer, lambda run: measure_upload(name, run, peer, source, send))

    def upload_plans(self, source: Source) -> list[Plan]:
        timeout = transfer_timeout(source.size)
        plans = []
        if nginx := self.peers.get("nginx"):

            def put(peer: Peer = nginx) -> Transfer:
                url = f"{peer.url}/upload-{next(self.counter)}.bin"
                return clients.curl_put(url, source.path, timeout)

            plans.append(self.upload_plan("nginx PUT", nginx, source, put, "curl -T"))
        else:
            self.missing("nginx", "nginx PUT")
        for key in ("@tus/server", "tuspyserver"):
            if (peer := self.peers.get(key)) is None:
                self.missing(key, f"{key} PATCH")
            else:
                endpoint = f"{peer.url}/"
                plans.append(
                    self.upload_plan(
                        f"{key} PATCH",
                        peer,
                        source,
                        functools.partial(clients.curl_tus, endpoint, source.path, timeout),
                        "curl POST + PATCH -T",
                    )
                )
        for fsync in FSYNC_POLICIES:
            if peer := self.peers.get(f"freight-{fsync}"):
                plans.extend(self.freight_upload_plans(peer, fsync, source))
            else:
                names = [f"freight {label} [{fsync}]" for label, _, _ in FREIGHT_PROTOCOLS]
                self.missing(f"freight-{fsync}", *names)
        if peer := self.peers.get(NO_SHA256_PEER):
            endpoint = f"{peer.url}/files/"
            upload = functools.partial(clients.curl_tus, endpoint, source.path, timeout)
            plans.append(
                self.upload_plan(TUS_NO_SHA256, peer, source, upload, "curl POST + PATCH -T")
            )
        else:
            self.missing(NO_SHA256_PEER, TUS_NO_SHA256)
        return plans

    def freight_upload_plans(self, peer: Peer, fsync: str, source: Source) -> list[Plan]:
        timeout = transfer_timeout(source.size)
        available = freight_features().upload_protocols
        plans = []
        for label, protocol, parallel in FREIGHT_PROTOCOLS:
            name = f"freight {label} [{fsync}]"
            if protocol == "tus":
                endpoint = f"{peer.url}/files/"
                plans.append(
                    self.upload_plan(
                        name,
                        peer,
                        source,
                        functools.partial(clients.curl_tus, endpoint, source.path, timeout),
                        "curl POST + PATCH -T",
                    )
                )
                continue
            url = peer.tcp_url if protocol == "tcp" else peer.url
            if protocol not in available or url is None:
                self.results.skipped[name] = f"this freight has no '{protocol}' upload yet"
                continue

            def send(u: str = url, p: str = protocol, n: int = parallel) -> Transfer:
                return clients.freight_send(u, source.path, p, n, timeout)

            client = f"freight send --protocol {protocol}"
            client += f" --parallel {parallel}" if parallel > 1 else ""
            plans.append(self.upload_plan(name, peer, source, send, client))
        if fsync == "never":

            def send_tus(u: str = f"{peer.url}/files/") -> Transfer:
                return clients.freight_send(u, source.path, "tus", 1, timeout)

            tus = "freight send --protocol tus"
            plans.append(self.upload_plan(SEND_TUS, peer, source, send_tus, tus))
        return plans

    def download_plans(self, source: Source) -> list[Plan]:
        """Put the source on every download server, check each serves it intact, plan GETs."""
        timeout = transfer_timeout(source.size)
        served: list[tuple[str, Peer, str]] = []
        for key in ("nginx", "http.server"):
            if peer := self.peers.get(key):
                link = peer.store_dir / "download.bin"
                link.unlink(missing_ok=True)
                try:
                    os.link(source.path, link)
                except OSError:
                    shutil.copyfile(source.path, link)
                served.append((f"{key} GET", peer, f"{peer.url}/download.bin"))
            else:
                self.missing(key, f"{key} GET")
        freight_id = ""
        if peer := self.peers.get("freight-never"):
            try:
                created = clients.curl_tus(f"{peer.url}/files/", source.path, timeout)
                freight_id = created.location.rstrip("/").rsplit("/", 1)[-1]
                served.append(("freight GET", peer, f"{peer.url}/files/{freight_id}"))
            except ClientError as exc:
                self.results.skipped["freight GET"] = f"could not upload the file to serve: {exc}"
        else:
            self.missing("freight-never", "freight GET", "freight tcp get")
        plans = []
        for name, peer, url in served:
            try:
                digest = clients.curl_sha256(url, timeout)
            except ClientError as exc:
                digest = str(exc)
            if digest != source.sha256:
                self.results.skipped[name] = f"served bytes do not match the source: {digest}"
                continue
            target = Target(name, "download", peer.name, client="curl -o /dev/null")
            plans.append(self.download_plan(target, peer, source.size, url, timeout))
        if freight_id and (peer := self.peers.get("freight-never")):
            plans.extend(self.tcp_download_plans(peer, freight_id, source, timeout))
        return plans

    def download_plan(
        self, target: Target, peer: Peer, size: int, url: str, timeout: float
    ) -> Plan:
        def run_once(run: int) -> Sample:
            return measure_download(
                target.name, run, peer, size, lambda: clients.curl_get(url, timeout)
            )

        return Plan(target, peer, run_once)

    def tcp_download_plans(
        self, peer: Peer, freight_id: str, source: Source, timeout: float
    ) -> list[Plan]:
        name = "freight tcp get"
        if peer.tcp_url is None:
            self.results.skipped[name] = "this freight has no TCP transport yet"
            return []
        client_dir = self.work / "client"
        output = client_dir / "download.bin"
        url = f"{peer.tcp_url}/{freight_id}"

        def fetch() -> Transfer:
            transfer = clients.freight_get(url, output, timeout)
            if transfer.sha256 != source.sha256:
                raise ClientError(f"freight get reported SHA-256 {transfer.sha256}")
            return transfer

        def run_once(run: int) -> Sample:
            return measure_download(name, run, peer, source.size, fetch, client_dir=client_dir)

        target = Target(name, "download", peer.name, client="freight get (hashes as it writes)")
        return [Plan(target, peer, run_once)]
