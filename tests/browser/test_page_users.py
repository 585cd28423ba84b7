"""The page on a household server: a user signs in with their token and sees only their
own files, with their usage against quota; signing out forgets the token."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

MiB = 1024 * 1024

pytestmark = pytest.mark.timeout(120)


def freight_user(data_dir: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "freight", "user", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def tus_upload(url: str, token: str, data: bytes, name: str) -> str:
    import base64

    request = urllib.request.Request(
        f"{url}/files/",
        data=data,
        method="POST",
        headers={
            "Authorization": f"Bearer {token}",
            "Tus-Resumable": "1.0.0",
            "Upload-Length": str(len(data)),
            "Upload-Metadata": f"filename {base64.b64encode(name.encode()).decode()}",
            "Content-Type": "application/offset+octet-stream",
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(response.headers["Location"]).rsplit("/", 1)[1]


def test_a_user_signs_in_and_sees_only_their_files_and_usage(
    tmp_path: Path,
    server_factory: Any,
    browser_page: Callable[..., Any],
    random_file: Callable[..., Any],
) -> None:
    data_dir = tmp_path / "data"
    freight_user(data_dir, "add", "alice", "--quota", "100MiB", "--max-files", "10")
    freight_user(data_dir, "add", "bob")
    alice = freight_user(data_dir, "token", "alice")
    bob = freight_user(data_dir, "token", "bob")
    server = server_factory(data_dir=data_dir).start()
    theirs = tus_upload(server.url, bob, b"bob's bytes", "bobs-secret.txt")
    mine = tus_upload(server.url, alice, b"x" * 1000, "alices-notes.txt")

    page = browser_page(server, token=alice)
    dialog = page.page.locator("#token-dialog")
    dialog.wait_for(state="visible")  # the server has users: a token is needed
    page.page.fill("#token-input", alice)
    page.page.click("#token-submit")
    dialog.wait_for(state="hidden")

    account = page.page.locator("#account [data-user=alice]")
    account.wait_for()
    page.page.locator(f'.file[data-file-id="{mine}"]').wait_for()
    assert page.page.locator(f'.file[data-file-id="{theirs}"]').count() == 0
    assert "bobs-secret" not in page.page.content()
    usage = page.page.locator("#account .account-usage")
    assert "of 100" in usage.inner_text() and "1 of 10 files" in usage.inner_text()

    file = random_file("holiday.bin", 2 * MiB)
    page.pick(file)
    row = page.wait_state(file, "done")
    upload_id = row.locator("[data-action=download]").get_attribute("href").rsplit("/", 1)[1]
    assert page.stored(upload_id)["sha256"] == file.sha256  # listed for alice's token
    page.page.click("#refresh-files")
    page.page.locator("#account .account-usage", has_text="2 of 10 files").wait_for()
    page.screenshot("browser-signed-in-user.png")

    page.page.click("#sign-out")
    page.page.wait_for_selector("body[data-ready]")
    dialog.wait_for(state="visible")  # the tab forgot the token
