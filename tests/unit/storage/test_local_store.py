"""LocalStore: SQLite rows, part files written in place, renames, repairs and id checks."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from freight.core.rangeset import RangeSet
from freight.core.session import ConcatKind, UploadSession, UploadState, new_upload_id
from freight.errors import FreightError, UploadNotFound
from freight.storage.local import LocalPartFile, LocalStore

MiB = 1024 * 1024
BAD_IDS = ["../x", "a/b", "", "x" * 200, "..", ".", "/etc/passwd", "a\x00b", "a b", "~x", "abc\n"]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "outer" / "data"


@pytest.fixture
def store(data_dir: Path) -> Iterator[LocalStore]:
    opened = LocalStore(data_dir)
    yield opened
    opened.close()


def session_of(
    length: int | None = 100, *, upload_id: str | None = None, **fields: Any
) -> UploadSession:
    fields.setdefault("created", 1000.0)
    fields.setdefault("expires", 2000.0)
    return UploadSession(
        id=new_upload_id() if upload_id is None else upload_id,
        length=length,
        metadata={},
        **fields,
    )


def allocated(path: Path) -> int:
    return os.stat(path).st_blocks * 512


def tree(root: Path) -> set[Path]:
    return set(root.rglob("*"))


def test_layout(store: LocalStore, data_dir: Path) -> None:
    assert store.root == data_dir.resolve()
    assert (data_dir / "freight.db").is_file()
    assert store.uploads_dir == store.root / "uploads" and store.uploads_dir.is_dir()
    assert store.files_dir == store.root / "files" and store.files_dir.is_dir()
    assert store.free_bytes() > 0


def test_rows_round_trip(store: LocalStore, data_dir: Path) -> None:
    full = UploadSession(
        id=new_upload_id(),
        length=12345,
        metadata={"filename": "naïve ☃.txt", "empty": "", "flag": None},
        created=1234.5,
        expires=99999.25,
        received=RangeSet([(0, 10), (20, 30)]),
        state=UploadState.RECEIVING,
        hashed_offset=10,
        hash_state=bytes(range(112)),
        concat_kind=ConcatKind.PARTIAL,
    )
    final = session_of(
        None,
        created=1500.0,
        expires=None,
        state=UploadState.FINISHED,
        concat_kind=ConcatKind.FINAL,
        concat_parts=("a", "b"),
        sha256="ab" * 32,
        finished=1600.0,
    )
    store.create(full)
    store.create(final)
    assert store.load(full.id) == full
    assert store.load(final.id) == final

    full.received.add(10, 20)
    full.hashed_offset, full.hash_state = 30, b"\x00" * 112
    store.save(full)
    assert store.load(full.id) == full
    assert [s.id for s in store.list_sessions()] == [full.id, final.id]

    store.close()
    reopened = LocalStore(data_dir)
    try:
        assert reopened.load(full.id) == full
        assert reopened.load(final.id) == final
        assert reopened.load(full.id).received.to_list() == [[0, 30]]
    finally:
        reopened.close()


def test_expired_ids(store: LocalStore) -> None:
    old = session_of(expires=10.0)
    fresh = session_of(expires=1000.0)
    finished = session_of(expires=10.0, state=UploadState.FINISHED)
    forever = session_of(expires=None)
    for session in (old, fresh, finished, forever):
        store.create(session)
    # A finished row with an expiry is a used concatenation part: it expires too.
    assert sorted(store.expired_ids(500.0)) == sorted([old.id, finished.id])
    assert sorted(store.expired_ids(5000.0)) == sorted([old.id, fresh.id, finished.id])


def test_unknown_ids(store: LocalStore) -> None:
    unknown = new_upload_id()
    with pytest.raises(UploadNotFound):
        store.load(unknown)
    with pytest.raises(UploadNotFound):
        store.open_file(unknown)
    with pytest.raises(UploadNotFound):
        store.open_part(session_of(upload_id=unknown))
    store.delete(unknown)  # not an error


def test_repair_removes_orphan_part_files(store: LocalStore, data_dir: Path) -> None:
    kept = session_of()
    store.create(kept)
    orphan = store.uploads_dir / f"{new_upload_id()}.part"
    orphan.write_bytes(b"left by a crash between the file and the row")
    other = store.uploads_dir / "README"
    other.write_text("not a part file")
    store.close()

    reopened = LocalStore(data_dir)
    try:
        assert not orphan.exists()
        assert other.exists()
        assert reopened.part_path(kept.id).exists()
        assert reopened.load(kept.id) == kept
    finally:
        reopened.close()


@pytest.mark.parametrize("bad", BAD_IDS)
def test_ids_that_could_escape_are_refused(store: LocalStore, tmp_path: Path, bad: str) -> None:
    before = tree(tmp_path)
    refusals: list[Callable[[], object]] = [
        lambda: store.load(bad),
        lambda: store.part_path(bad),
        lambda: store.file_path(bad),
        lambda: store.open_file(bad),
        lambda: store.open_part(session_of(upload_id=bad)),
        lambda: store.create(session_of(upload_id=bad)),
        lambda: store.reserve(session_of(upload_id=bad)),
        lambda: store.finish(session_of(upload_id=bad)),
        lambda: store.delete(bad),
    ]
    for refuse in refusals:
        with pytest.raises(UploadNotFound):
            refuse()
    created = tree(tmp_path) - before
    assert {p.name for p in created} <= {"freight.db-wal", "freight.db-shm"}
    assert list(store.uploads_dir.iterdir()) == []
    assert list(store.files_dir.iterdir()) == []
    assert [s.id for s in store.list_sessions()] == []


def test_finish_is_a_rename(store: LocalStore) -> None:
    session = session_of(length=10)
    store.create(session)
    part = store.open_part(session)
    try:
        part.write_at(0, b"0123456789")
        part.sync()
    finally:
        part.close()
    part_path, file_path = store.part_path(session.id), store.file_path(session.id)
    inode = os.stat(part_path).st_ino

    session.received.add(0, 10)
    session.state, session.sha256, session.expires = UploadState.FINISHED, "00" * 32, None
    store.finish(session)
    assert not part_path.exists()
    assert os.stat(file_path).st_ino == inode
    assert file_path.read_bytes() == b"0123456789"
    assert store.load(session.id).state is UploadState.FINISHED

    store.delete(session.id)
    assert not file_path.exists()
    with pytest.raises(UploadNotFound):
        store.load(session.id)


def test_open_part_reads_a_file_renamed_before_its_row(store: LocalStore) -> None:
    session = session_of(length=3)
    store.create(session)
    part = store.open_part(session)
    part.write_at(0, b"abc")
    part.close()
    os.rename(store.part_path(session.id), store.file_path(session.id))
    reopened = store.open_part(session)
    try:
        buffer = bytearray(8)
        assert reopened.read_into(0, memoryview(buffer)) == 3
        assert bytes(buffer[:3]) == b"abc"
    finally:
        reopened.close()


def test_a_declared_length_takes_no_space(store: LocalStore) -> None:
    # A creation (answered or lost) must not hold disk space before bytes arrive.
    session = session_of(length=5 * MiB + 3)
    store.create(session)
    path = store.part_path(session.id)
    assert allocated(path) == 0
    session.length = 64 * MiB
    store.reserve(session)
    assert allocated(path) == 0


def test_part_files_write_in_place(store: LocalStore, tmp_path: Path) -> None:
    session = session_of(length=20)
    store.create(session)
    part = store.open_part(session)
    try:
        part.write_at(10, memoryview(bytearray(b"klmnopqrst")))
        part.write_at(0, b"abcdefghij")
        part.sync()
        buffer = bytearray(32)
        assert part.read_into(5, memoryview(buffer)) == 15
        assert bytes(buffer[:15]) == b"fghijklmnopqrst"
    finally:
        part.close()
        part.close()  # closing twice is harmless

    readonly = LocalPartFile(store.part_path(session.id), writable=False)
    try:
        with pytest.raises(FreightError):
            readonly.write_at(0, b"nope")
    finally:
        readonly.close()
    with pytest.raises(UploadNotFound):
        LocalPartFile(tmp_path / "missing", writable=True)


@pytest.mark.skipif(not hasattr(os, "splice"), reason="splice(2) is Linux only")
def test_part_files_take_bytes_from_a_pipe(store: LocalStore) -> None:
    session = session_of(length=300_000)
    store.create(session)
    part = store.open_part(session)
    data = os.urandom(200_000)
    read_end, write_end = os.pipe()
    try:
        writer = threading.Thread(target=os.write, args=(write_end, data))
        writer.start()  # the pipe holds 64 KiB: it fills while the file drains it
        part.write_from_pipe(read_end, 100_000, len(data))
        writer.join()
        buffer = bytearray(len(data))
        assert part.read_into(100_000, memoryview(buffer)) == len(data)
        assert bytes(buffer) == data
        os.write(write_end, b"short")
        os.close(write_end)
        write_end = -1
        with pytest.raises(FreightError):  # the pipe ends 5 bytes short
            part.write_from_pipe(read_end, 0, 10)
    finally:
        part.close()
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)


def test_reserve_for_a_missing_part_is_not_found(store: LocalStore) -> None:
    with pytest.raises(UploadNotFound):
        store.reserve(session_of(length=10))


@pytest.mark.parametrize("module", ["freight.storage.local", "freight.storage"])
def test_storage_imports_on_its_own(module: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr.splitlines()[-1:]
