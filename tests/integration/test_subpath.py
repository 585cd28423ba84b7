"""``freight serve --base-path /sub/`` behind a real nginx that forwards ``/sub/``.

Every route, Location and file URL carries the prefix, so tus, the chunk API, the WebSocket
endpoint, downloads and listings all work through the proxy, and ``freight send
http://proxy/sub`` finds the API under the URL's path. (Without the option the server's
answers name ``/files/...`` at the proxy's root, which nginx does not forward: the tus
client's next request got a 404 and left the upload behind.)
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import pytest
from helpers import MiB, PatternStream, create_upload, download, head_offset, patch_stream
from helpers import request as http_request
from reverse_proxy import NginxProxy, nginx_proxy
from tusclient import client as tus_client

FREIGHT = [sys.executable, "-m", "freight"]
TUS = {"Tus-Resumable": "1.0.0"}


@pytest.fixture
def mounted(server_factory: Any, tmp_path: Path) -> Any:
    return server_factory(data_dir=tmp_path / "data", args=["--base-path", "/sub/"]).start()


@pytest.fixture
def proxy(mounted: Any, tmp_path: Path) -> Iterator[NginxProxy]:
    with nginx_proxy(tmp_path / "nginx", mounted.port, "/sub/") as started:
        yield started


def freight(*args: str, state: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FREIGHT_STATE_DIR": str(state), "PYTHONUNBUFFERED": "1"}
    env.pop("FREIGHT_TOKEN", None)
    return subprocess.run(
        [*FREIGHT, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def answer(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(MiB):
            digest.update(block)
    return digest.hexdigest()


@pytest.mark.parametrize(
    ("protocol", "suffix"), [("tus", ""), ("tus", "/"), ("chunks", ""), ("ws", "/")]
)
def test_the_cli_sends_gets_lists_and_removes_through_nginx(
    protocol: str, suffix: str, proxy: NginxProxy, tmp_path: Path
) -> None:
    source = PatternStream(9 * MiB, seed=len(protocol)).write_to(tmp_path / "sent.bin")
    state = tmp_path / "state"
    sent = answer(
        freight(
            *("send", str(source), proxy.url + suffix, "--protocol", protocol, "--json", "-q"),
            state=state,
        )
    )
    assert sent["url"].startswith(f"{proxy.url}/files/"), sent
    assert sent["sha256"] == file_sha256(source)

    fetched = tmp_path / "fetched.bin"
    got = answer(freight("get", sent["url"], "-o", str(fetched), "--json", "-q", state=state))
    assert got["sha256"] == sent["sha256"] == file_sha256(fetched)

    listed = answer(freight("ls", proxy.url, "--json", state=state))
    assert [f["url"] for f in listed["files"]] == [sent["url"]]
    assert freight("rm", sent["url"], state=state).returncode == 0
    assert answer(freight("ls", proxy.url + "/", "--json", state=state))["files"] == []


def test_tus_answers_carry_the_prefix(proxy: NginxProxy) -> None:
    """An independent client: Location, listings and concatenation name /sub/files/."""
    stream = PatternStream(6 * MiB, seed=7)
    created = http_request("POST", f"{proxy.url}/files/", {**TUS, "Upload-Length": "6291456"})
    assert created.status == 201
    location = created.header("Location") or ""
    assert location.startswith("/sub/files/"), location
    upload = urljoin(proxy.url, location)
    assert patch_stream(upload, 0, stream.chunks(), stream.size).status == 204
    assert head_offset(upload) == stream.size
    assert download(upload).sha256 == stream.sha256()

    # Concatenation takes and gives the partial uploads' URLs under the prefix.
    parts = []
    for seed in (1, 2):
        part = PatternStream(MiB, seed=seed)
        headers = {**TUS, "Upload-Length": str(MiB), "Upload-Concat": "partial"}
        reply = http_request("POST", f"{proxy.url}/files/", headers)
        parts.append(urljoin(proxy.url, reply.header("Location") or ""))
        assert patch_stream(parts[-1], 0, part.chunks(), MiB).status == 204
    paths = " ".join("/sub/files/" + p.rsplit("/", 1)[1] for p in parts)
    final = http_request("POST", f"{proxy.url}/files/", {**TUS, "Upload-Concat": f"final;{paths}"})
    assert final.status == 201, final.body
    assert download(urljoin(proxy.url, final.header("Location") or "")).size == 2 * MiB

    files = http_request("GET", f"{proxy.url}/api/files").json()
    assert isinstance(files, dict)
    assert all(f["url"].startswith("/sub/files/") for f in files["files"])
    assert http_request("GET", f"{proxy.url}/health").status == 200
    document = http_request("GET", f"{proxy.url}/api/openapi.json").json()
    assert isinstance(document, dict)
    assert document["servers"] == [{"url": "/sub"}]
    assert "/files/" in document["paths"] and "/api/uploads" in document["paths"]


def test_tuspy_uploads_through_nginx(proxy: NginxProxy, tmp_path: Path) -> None:
    stream = PatternStream(5 * MiB, seed=3)
    source = stream.write_to(tmp_path / "tuspy.bin")
    uploader = tus_client.TusClient(f"{proxy.url}/files/").uploader(str(source), chunk_size=2 * MiB)
    uploader.upload()
    assert uploader.url is not None and uploader.url.startswith(f"{proxy.url}/files/")
    assert download(uploader.url).sha256 == stream.sha256()


def test_only_health_answers_outside_the_prefix(mounted: Any) -> None:
    root = mounted.url.removesuffix("/sub/").removesuffix("/sub")
    assert http_request("GET", f"{root}/health").status == 200
    assert http_request("POST", f"{root}/files/", {**TUS, "Upload-Length": "1"}).status == 404
    assert http_request("GET", f"{root}/api/files").status == 404
    assert http_request("GET", f"{root}/").status == 404
    bare = http_request("GET", f"{root}/sub")
    assert (bare.status, bare.header("Location")) == (308, "/sub/")
    assert create_upload(f"{root}/sub", 1).startswith(f"{root}/sub/files/")
