"""``freight serve --tls-cert/--tls-key``: HTTPS for every protocol, certificate reloads on
SIGHUP that leave transfers in flight alone, and clients that check the certificate
(``--cacert``) or are told to skip the check (``--insecure``).

The certificates come from a CA made for the session (``tls_files`` in tests/conftest.py).
Bodies are larger than the server's direct-read threshold, so over plain HTTP they would be
taken straight off the socket; over TLS they must come through the decrypting stream.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import MiB, PatternStream

FREIGHT = [sys.executable, "-m", "freight"]
TUS = {"Tus-Resumable": "1.0.0"}
SIZE = 12 * MiB  # above body.DIRECT_MIN (4 MiB)


@pytest.fixture
def live_tls(tls_files: Any, tmp_path: Path) -> tuple[Path, Path]:
    """Copies of the server's certificate and key, which a test may overwrite."""
    cert, key = tmp_path / "live-cert.pem", tmp_path / "live-key.pem"
    shutil.copyfile(tls_files.cert, cert)
    shutil.copyfile(tls_files.key, key)
    return cert, key


@pytest.fixture
def tls_server(server_factory: Any, tmp_path: Path, live_tls: tuple[Path, Path]) -> Any:
    cert, key = live_tls
    args = ["--tls-cert", str(cert), "--tls-key", str(key)]
    server = server_factory(data_dir=tmp_path / "data", args=args).start()
    assert server.url.startswith("https://"), server.url
    return server


def freight(*args: str, state: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FREIGHT_STATE_DIR": str(state), "PYTHONUNBUFFERED": "1"}
    for name in ("FREIGHT_TOKEN", "FREIGHT_CACERT", "SSL_CERT_FILE", "SSL_CERT_DIR"):
        env.pop(name, None)
    return subprocess.run(
        [*FREIGHT, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
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


def pem_der(path: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(path.read_text())


def connect(server: Any, ca: Path) -> http.client.HTTPSConnection:
    context = ssl.create_default_context(cafile=str(ca))
    return http.client.HTTPSConnection("127.0.0.1", server.port, timeout=30, context=context)


def served_certificate(server: Any, ca: Path) -> bytes:
    """The certificate a new connection is given (DER)."""
    conn = connect(server, ca)
    try:
        conn.connect()
        assert conn.sock is not None
        der = conn.sock.getpeercert(binary_form=True)  # type: ignore[attr-defined]
        assert isinstance(der, bytes)
        return der
    finally:
        conn.close()


@pytest.mark.parametrize("protocol", ["tus", "chunks", "ws"])
def test_the_cli_sends_and_gets_over_tls_with_cacert(
    protocol: str, tls_server: Any, tls_files: Any, tmp_path: Path
) -> None:
    source = PatternStream(SIZE, seed=len(protocol)).write_to(tmp_path / "sent.bin")
    state, ca = tmp_path / "state", str(tls_files.ca)
    sent = answer(
        freight(
            *("send", str(source), tls_server.url, "--protocol", protocol),
            *("--cacert", ca, "--json", "-q"),
            state=state,
        )
    )
    assert sent["url"].startswith(f"{tls_server.url}/files/"), sent
    assert sent["sha256"] == file_sha256(source)

    fetched = tmp_path / "fetched.bin"
    got = freight("get", sent["url"], "-o", str(fetched), "--cacert", ca, "--json", state=state)
    assert answer(got)["sha256"] == sent["sha256"] == file_sha256(fetched)
    listed = answer(freight("ls", tls_server.url, "--cacert", ca, "--json", state=state))
    assert [f["url"] for f in listed["files"]] == [sent["url"]]
    assert freight("rm", sent["url"], "--cacert", ca, state=state).returncode == 0


def test_an_untrusted_certificate_is_a_one_line_error_and_insecure_skips_the_check(
    tls_server: Any, tmp_path: Path
) -> None:
    source = PatternStream(MiB).write_to(tmp_path / "small.bin")
    state, url = tmp_path / "state", tls_server.url
    commands = [
        ["ls", url],
        ["send", str(source), url],
        ["get", f"{url}/files/x", "-o", str(tmp_path / "x")],
        ["rm", f"{url}/files/x"],
    ]
    for command in commands:
        started = time.monotonic()
        done = freight(*command, state=state, timeout=60)
        assert done.returncode != 0
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert "not trusted" in lines[0] and "--cacert" in lines[0], lines[0]
        # Not retried: waiting never makes a certificate trusted.
        assert time.monotonic() - started < 15, command
    sent = answer(freight("send", str(source), url, "--insecure", "--json", "-q", state=state))
    assert sent["sha256"] == file_sha256(source)
    listed = answer(freight("ls", url, "-k", "--json", state=state))
    assert [f["url"] for f in listed["files"]] == [sent["url"]]


def test_a_cacert_that_holds_no_certificate_is_refused_in_one_line(
    tls_server: Any, tmp_path: Path
) -> None:
    garbage = tmp_path / "not-a-ca.pem"
    garbage.write_text("hello\n")
    done = freight("ls", tls_server.url, "--cacert", str(garbage), state=tmp_path / "s")
    assert done.returncode == 2
    assert "--cacert" in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_sighup_reloads_the_certificate_without_dropping_an_upload_in_flight(
    tls_server: Any, tls_files: Any, live_tls: tuple[Path, Path]
) -> None:
    ca = tls_files.ca
    first = pem_der(tls_files.cert)
    assert served_certificate(tls_server, ca) == first

    control = connect(tls_server, ca)
    control.request("POST", "/files/", headers={**TUS, "Upload-Length": str(SIZE)})
    created = control.getresponse()
    created.read()
    assert created.status == 201
    upload = created.getheader("Location") or ""
    control.close()

    stream = PatternStream(SIZE, seed=11)
    pieces = stream.chunks()
    patch = connect(tls_server, ca)
    patch.putrequest("PATCH", upload)
    headers = {
        **TUS,
        "Upload-Offset": "0",
        "Content-Type": "application/offset+octet-stream",
        "Content-Length": str(SIZE),
    }
    for name, value in headers.items():
        patch.putheader(name, value)
    patch.endheaders()
    for _ in range(SIZE // MiB // 2):
        patch.send(next(pieces))

    renewed_cert, renewed_key = tls_files.issue("renewed")
    cert, key = live_tls
    shutil.copyfile(renewed_cert, cert)
    shutil.copyfile(renewed_key, key)
    tls_server.proc.send_signal(signal.SIGHUP)
    renewed = pem_der(renewed_cert)
    deadline = time.monotonic() + 15
    while served_certificate(tls_server, ca) != renewed:
        assert time.monotonic() < deadline, "new connections never saw the new certificate"
        time.sleep(0.1)

    # The connection that started before the reload carries on with its own session.
    assert patch.sock is not None
    assert patch.sock.getpeercert(binary_form=True) == first  # type: ignore[attr-defined]
    for piece in pieces:
        patch.send(piece)
    finished = patch.getresponse()
    finished.read()
    assert (finished.status, finished.getheader("Upload-Offset")) == (204, str(SIZE))
    patch.close()

    check = connect(tls_server, ca)
    check.request("GET", upload)
    body = check.getresponse()
    digest = hashlib.sha256()
    while block := body.read(MiB):
        digest.update(block)
    assert (body.status, digest.hexdigest()) == (200, stream.sha256())
    check.close()
    assert tls_server.proc.poll() is None


def test_a_reload_with_a_key_that_does_not_match_keeps_the_current_certificate(
    tls_server: Any, tls_files: Any, live_tls: tuple[Path, Path]
) -> None:
    cert, _key = live_tls
    other_cert, _ = tls_files.issue("mismatched")
    shutil.copyfile(other_cert, cert)  # the key file still holds the old key
    tls_server.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 15
    while not any("not reloaded" in line for line in list(tls_server.output_tail)):
        assert time.monotonic() < deadline, "the failed reload was not reported"
        time.sleep(0.1)
    assert served_certificate(tls_server, tls_files.ca) == pem_der(tls_files.cert)
    assert tls_server.proc.poll() is None


def test_serve_refuses_a_key_that_does_not_match_in_one_line(
    tls_files: Any, tmp_path: Path
) -> None:
    _, other_key = tls_files.issue("stray")
    done = freight(
        *("serve", "--port", "0", "--data-dir", str(tmp_path / "data")),
        *("--tls-cert", str(tls_files.cert), "--tls-key", str(other_key)),
        state=tmp_path / "state",
        timeout=60,
    )
    assert done.returncode == 2
    assert "--tls-cert" in done.stderr and "Traceback" not in done.stderr, done.stderr
    lonely = freight(
        *("serve", "--port", "0", "--data-dir", str(tmp_path / "data")),
        *("--tls-cert", str(tls_files.cert)),
        state=tmp_path / "state",
        timeout=60,
    )
    assert lonely.returncode == 2 and "go together" in lonely.stderr
