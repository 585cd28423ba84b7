"""Interop with tus-js-client 4.x under Node.js (tus 1.0 and the IETF resumable-upload drafts).

``tus_upload.mjs`` uploads a file from disk with ``fs.createReadStream`` and prints the final
upload URL; these tests then download it and compare SHA-256 digests. Fixtures
(``random_file``, ``check_stored``) come from this folder's conftest.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import ssl
import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "tus_upload.mjs"
UPLOAD_TIMEOUT = 300
MiB = 1024 * 1024

NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(
    NODE is None, reason="node is not installed: the tus-js-client interop tests need it"
)


@pytest.fixture(scope="session")
def node_harness() -> Path:
    """tests/interop/node_modules with tus-js-client, installed with ``npm ci`` if absent."""
    if not (HERE / "node_modules" / "tus-js-client" / "package.json").is_file():
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail("tus-js-client is not installed and npm is missing: run `make test`")
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=HERE,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if result.returncode != 0:
            pytest.fail(f"npm ci failed in {HERE}:\n{result.stdout}\n{result.stderr}")
    return SCRIPT


def run_tus_js(
    script: Path,
    endpoint: str,
    path: Path,
    options: dict[str, object],
    env: dict[str, str] | None = None,
) -> str:
    """Upload ``path`` with tus-js-client; return the final upload URL."""
    assert NODE is not None
    result = subprocess.run(
        [NODE, str(script), endpoint, str(path), json.dumps(options)],
        capture_output=True,
        text=True,
        timeout=UPLOAD_TIMEOUT,
        env={**os.environ, "NODE_NO_WARNINGS": "1", **(env or {})},
    )
    trace = result.stderr[-20_000:]
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        pytest.fail(f"tus-js-client failed (exit {result.returncode}); its trace:\n{trace}")
    outcome = json.loads(lines[-1])
    assert outcome["size"] == path.stat().st_size
    return str(outcome["url"])


CASES = {
    # tus concatenation: 4 partial uploads in parallel, then a final upload joining them.
    "tus-parallel-4": (64 * MiB, {"parallelUploads": 4}),
    # IETF draft, interop version 6: appends with Content-Type application/partial-upload.
    "ietf-draft-05": (64 * MiB, {"protocol": "ietf-draft-05"}),
    # IETF draft, interop version 5: Upload-Complete, no content type on appends.
    "ietf-draft-03": (64 * MiB, {"protocol": "ietf-draft-03"}),
    # Several appends, and a body on the creating POST (creation-with-upload).
    "tus-chunked": (16 * MiB, {"chunkSize": 5 * MiB}),
    "tus-data-on-creation": (16 * MiB, {"uploadDataDuringCreation": True, "chunkSize": 6 * MiB}),
    # tus-js-client 4.x sends `Upload-Complete: ?0` even on the last append of a file source
    # (tus-js-client#820); tusd completes an upload once its declared length is reached.
    "ietf-draft-05-chunked": (16 * MiB, {"protocol": "ietf-draft-05", "chunkSize": 5 * MiB}),
    "ietf-draft-05-one-request": (
        16 * MiB,
        {"protocol": "ietf-draft-05", "uploadDataDuringCreation": True},
    ),
    # Deferred length needs a plain stream; its size must not be a multiple of chunkSize
    # (tus-js-client#779: such a stream never reports its end).
    "tus-deferred-length": (
        16 * MiB,
        {"uploadLengthDeferred": True, "chunkSize": 6 * MiB, "source": "stream"},
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_tus_js_client_upload(
    case: str,
    freight_server: Any,
    random_file: Callable[..., Any],
    check_stored: Callable[..., None],
    node_harness: Path,
) -> None:
    size, options = CASES[case]
    local = random_file(size)
    url = run_tus_js(node_harness, f"{freight_server.url}/files/", local.path, options)
    check_stored(freight_server.url, url, local)


def test_tus_js_client_with_a_token(
    server_factory: Callable[..., Any],
    tmp_path: Path,
    random_file: Callable[..., Any],
    check_stored: Callable[..., None],
    node_harness: Path,
) -> None:
    """A server started with --token: partial and final uploads all carry the bearer token."""
    token = "interop-secret"
    server = server_factory(data_dir=tmp_path / "data", args=["--token", token]).start()
    auth = {"Authorization": f"Bearer {token}"}
    local = random_file(8 * MiB)
    options = {"parallelUploads": 2, "headers": auth}
    url = run_tus_js(node_harness, f"{server.url}/files/", local.path, options)
    check_stored(server.url, url, local, headers=auth)


@pytest.mark.parametrize("options", [{"parallelUploads": 2}, {"protocol": "ietf-draft-05"}])
def test_tus_js_client_over_https(
    options: dict[str, object],
    server_factory: Callable[..., Any],
    tmp_path: Path,
    tls_files: Any,
    random_file: Callable[..., Any],
    node_harness: Path,
) -> None:
    """``serve --tls-cert``: Node trusts the test CA through NODE_EXTRA_CA_CERTS only."""
    args = ["--tls-cert", str(tls_files.cert), "--tls-key", str(tls_files.key)]
    server = server_factory(data_dir=tmp_path / "data", args=args).start()
    assert server.url.startswith("https://")
    local = random_file(12 * MiB)
    trusted = {"NODE_EXTRA_CA_CERTS": str(tls_files.ca)}
    url = run_tus_js(node_harness, f"{server.url}/files/", local.path, options, env=trusted)
    assert url.startswith(f"{server.url}/files/")
    context = ssl.create_default_context(cafile=str(tls_files.ca))
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, context=context, timeout=60) as reply:
        while block := reply.read(MiB):
            digest.update(block)
    assert digest.digest() == local.sha256
