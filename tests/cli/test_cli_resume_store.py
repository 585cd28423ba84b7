"""The client's resume state: keyed, atomic, private, shared safely between processes."""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from pathlib import Path

import pytest

from freight.client.resume_store import (
    MAX_AGE,
    DownloadKey,
    DownloadState,
    ResumeStore,
    UploadKey,
    default_state_dir,
)


def test_upload_url_round_trip(tmp_path: Path) -> None:
    data = tmp_path / "data.bin"
    data.write_bytes(b"abc")
    store = ResumeStore(tmp_path / "state")
    key = UploadKey.for_file(data, "http://h:1/files/")
    assert store.get_upload(key) is None
    store.put_upload(key, "http://h:1/files/one")
    store.put_upload(key, "http://h:1/files/two")  # replaces, never duplicates
    assert ResumeStore(tmp_path / "state").get_upload(key) == "http://h:1/files/two"
    store.forget_upload(key)
    assert store.get_upload(key) is None


def test_a_changed_file_or_another_server_has_no_upload(tmp_path: Path) -> None:
    data = tmp_path / "data.bin"
    data.write_bytes(b"abc")
    store = ResumeStore(tmp_path / "state")
    key = UploadKey.for_file(data, "http://h:1/files/")
    store.put_upload(key, "http://h:1/files/one")
    assert store.get_upload(UploadKey.for_file(data, "http://other:1/files/")) is None
    data.write_bytes(b"abcd")
    assert store.get_upload(UploadKey.for_file(data, "http://h:1/files/")) is None
    os.utime(data, ns=(0, key.mtime_ns + 1))
    data.write_bytes(b"abc")
    assert store.get_upload(UploadKey.for_file(data, "http://h:1/files/")) is None


def test_download_state_round_trip(tmp_path: Path) -> None:
    store = ResumeStore(tmp_path / "state")
    key = DownloadKey.for_part(tmp_path / "x.part", "http://h:1/files/abc")
    store.put_download(key, DownloadState(etag='"e1"', size=10))
    assert store.get_download(key) == DownloadState(etag='"e1"', size=10)
    assert (
        store.get_download(DownloadKey.for_part(tmp_path / "x.part", "http://h:1/files/z")) is None
    )
    store.forget_download(key)
    assert store.get_download(key) is None


def test_state_is_private_and_written_atomically(tmp_path: Path) -> None:
    store = ResumeStore(tmp_path / "state")
    store.put_download(DownloadKey("p", "u"), DownloadState("e", 1))
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "state" / "downloads.json").stat().st_mode) == 0o600
    leftovers = [p.name for p in (tmp_path / "state").iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


@pytest.mark.parametrize(
    "garbage", ["", "{", "[]", '{"version": 99, "entries": []}', '{"version": 1}']
)
def test_a_damaged_state_file_counts_as_empty(tmp_path: Path, garbage: str) -> None:
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "uploads.json").write_text(garbage)
    store = ResumeStore(tmp_path / "state")
    key = UploadKey("/f", 1, 2, "http://h/files/")
    assert store.get_upload(key) is None
    store.put_upload(key, "http://h/files/x")
    assert store.get_upload(key) == "http://h/files/x"


def test_stale_entries_are_dropped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ResumeStore(tmp_path / "state")
    old = UploadKey("/old", 1, 2, "s")
    store.put_upload(old, "u-old")
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now + MAX_AGE + 60)
    store.put_upload(UploadKey("/new", 1, 2, "s"), "u-new")
    entries = json.loads((tmp_path / "state" / "uploads.json").read_text())["entries"]
    assert [e["upload_url"] for e in entries] == ["u-new"]


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    def writer(n: int) -> None:
        store = ResumeStore(tmp_path / "state")
        for i in range(10):
            store.put_upload(UploadKey(f"/f{n}-{i}", 1, 1, "s"), f"u{n}-{i}")

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    entries = json.loads((tmp_path / "state" / "uploads.json").read_text())["entries"]
    assert len(entries) == 60


def test_default_state_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FREIGHT_STATE_DIR", str(tmp_path / "explicit"))
    assert default_state_dir() == tmp_path / "explicit"
    monkeypatch.delenv("FREIGHT_STATE_DIR")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert default_state_dir() == tmp_path / "xdg" / "freight"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_state_dir() == tmp_path / "home" / ".local" / "state" / "freight"
