"""The clients that move the bytes: curl for every HTTP target, freight's CLI for the rest.

curl is the one neutral client for HTTP, so only the server differs between those targets:

- plain PUT (nginx WebDAV): ``curl -T FILE URL``, the file streamed from disk;
- tus: one POST (untimed) creates the upload, then one ``PATCH`` streams the whole file with
  ``curl -T FILE -X PATCH``;
- downloads: ``curl -o /dev/null URL``.

``--data-binary`` is never used: it reads the whole file into memory first. ``Expect:`` is
sent empty so no server is charged curl's one-second wait for a ``100 Continue``. Times are
the clients' own (curl's ``time_total``, freight's ``seconds``), so process start-up is not
counted for either.

Protocols only freight speaks (chunk API, WebSocket, raw TCP) go through ``freight send``
and ``freight get``, which also hash what they send or receive.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

__all__ = [
    "ClientError",
    "Transfer",
    "curl_get",
    "curl_put",
    "curl_tus",
    "freight_get",
    "freight_send",
]

TUS_HEADERS = ["-H", "Tus-Resumable: 1.0.0"]
NO_EXPECT = ["-H", "Expect:"]


class ClientError(Exception):
    """A transfer that did not complete; the message has the client's own words."""


@dataclass(frozen=True)
class Transfer:
    """One finished transfer: how long the client says it took, and what it reported."""

    seconds: float
    size: int
    location: str = ""
    sha256: str = ""
    cpu_seconds: float | None = None  # the client's own count, where it gives one


def _run(command: list[str], timeout: float, env: dict[str, str] | None = None) -> str:
    try:
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={**os.environ, **(env or {})},
        )
    except subprocess.TimeoutExpired as exc:
        raise ClientError(f"{Path(command[0]).name} timed out after {timeout:.0f} s") from exc
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()[-400:]
        raise ClientError(f"{Path(command[0]).name} exited {result.returncode}: {detail}")
    return result.stdout


def _curl(args: list[str], timeout: float) -> tuple[int, float, str]:
    """Run curl; return (HTTP status, time_total, response headers)."""
    out = _run(
        ["curl", "-sS", "-D", "-", "-o", "/dev/null", *args, "-w", "\n%{http_code} %{time_total}"],
        timeout,
    )
    headers, _, last = out.rpartition("\n")
    status, seconds = last.split()
    return int(status), float(seconds), headers


def _expect(status: int, wanted: tuple[int, ...], what: str, headers: str) -> None:
    if status not in wanted:
        first = headers.strip().splitlines()[:1]
        raise ClientError(f"{what} answered {status} ({first[0] if first else 'no headers'})")


def _header(headers: str, name: str) -> str | None:
    for line in headers.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() == name.lower():
            return value.strip()
    return None


def curl_put(url: str, path: Path, timeout: float) -> Transfer:
    status, seconds, headers = _curl(["-T", str(path), *NO_EXPECT, url], timeout)
    _expect(status, (200, 201, 204), "PUT", headers)
    return Transfer(seconds, path.stat().st_size, location=url)


def curl_tus(endpoint: str, path: Path, timeout: float) -> Transfer:
    """Create a tus upload (POST, untimed) and send the whole file in one timed PATCH."""
    size = path.stat().st_size
    name = base64.b64encode(path.name.encode()).decode()
    create = ["-X", "POST", *TUS_HEADERS, "-H", f"Upload-Length: {size}"]
    create += ["-H", f"Upload-Metadata: filename {name}", endpoint]
    status, _, headers = _curl(create, timeout)
    _expect(status, (201,), "tus POST", headers)
    location = _header(headers, "Location")
    if not location:
        raise ClientError("tus POST gave no Location")
    location = urljoin(endpoint.rstrip("/") + "/", location)
    patch = ["-X", "PATCH", "-T", str(path), *NO_EXPECT, *TUS_HEADERS]
    patch += ["-H", "Upload-Offset: 0", "-H", "Content-Type: application/offset+octet-stream"]
    status, seconds, headers = _curl([*patch, location], timeout)
    _expect(status, (204,), "tus PATCH", headers)
    offset = _header(headers, "Upload-Offset")
    if offset != str(size):
        raise ClientError(f"tus PATCH ended at offset {offset}, not {size}")
    return Transfer(seconds, size, location=location)


def curl_get(url: str, timeout: float) -> Transfer:
    status, seconds, headers = _curl([url], timeout)
    _expect(status, (200,), "GET", headers)
    length = _header(headers, "Content-Length")
    return Transfer(seconds, int(length) if length else 0, location=url)


def _freight(args: list[str], timeout: float, src: Path | None = None) -> dict[str, object]:
    # A fresh state directory: no run may resume another's upload or download.
    with tempfile.TemporaryDirectory(prefix="freight-bench-state-") as state:
        env = {"FREIGHT_STATE_DIR": state}
        if src is not None:  # the client of another tree (a baseline's), not this one
            rest = os.environ.get("PYTHONPATH", "")
            env["PYTHONPATH"] = str(src) + (os.pathsep + rest if rest else "")
        out = _run([sys.executable, "-m", "freight", *args, "--json", "--quiet"], timeout, env)
    reply: dict[str, object] = json.loads(out)
    return reply


@functools.cache
def _skips_existing(src: Path | None) -> bool:
    """Whether that tree's ``freight send`` skips files the server has (and so takes
    ``--force``); older trees, run by a baseline, have no such option."""
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    out = subprocess.run(
        [sys.executable, "-m", "freight", "send", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    ).stdout
    return "--force" in out


def freight_send(
    url: str, path: Path, protocol: str, parallel: int, timeout: float, src: Path | None = None
) -> Transfer:
    """``freight send``; from the tree at ``src`` (its ``src`` directory) if given."""
    args = ["send", "--protocol", protocol, "--parallel", str(parallel), str(path), url]
    if _skips_existing(src):
        args.insert(1, "--force")  # every round sends the same file: it must really go
    reply = _freight(args, timeout, src)
    if not reply.get("verified"):
        raise ClientError(f"freight send could not verify the server's SHA-256: {reply}")
    return Transfer(
        float(str(reply["seconds"])),
        int(str(reply["size"])),
        location=str(reply["url"]),
        sha256=str(reply["sha256"]),
    )


def freight_get(url: str, output: Path, timeout: float) -> Transfer:
    reply = _freight(["get", url, "-o", str(output), "--force"], timeout)
    if not reply.get("verified"):
        raise ClientError(f"freight get could not verify the server's SHA-256: {reply}")
    return Transfer(
        float(str(reply["seconds"])),
        int(str(reply["size"])),
        location=url,
        sha256=str(reply["sha256"]),
    )


def curl_sha256(url: str, timeout: float) -> str:
    """SHA-256 of what ``GET url`` returns, hashed as it streams (nothing written to disk)."""
    import hashlib

    hasher = hashlib.sha256()
    with subprocess.Popen(["curl", "-sS", "--fail", url], stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        while block := proc.stdout.read(1 << 20):
            hasher.update(block)
        if proc.wait(timeout) != 0:
            raise ClientError(f"curl {url} exited {proc.returncode}")
    return hasher.hexdigest()
