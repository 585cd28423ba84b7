"""LocalBlobs and open_local beyond the contract: the layout, renames, space and repairs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from freight.core.session import UploadSession, new_upload_id
from freight.storage import LocalBlobs, open_local
from freight.storage.local_files import ALLOCATE_AHEAD

MiB = 1024 * 1024


@pytest.fixture
def blobs(tmp_path: Path) -> LocalBlobs:
    return LocalBlobs(tmp_path / "data", MiB)


async def test_layout(blobs: LocalBlobs, tmp_path: Path) -> None:
    root = (tmp_path / "data").resolve()
    assert (blobs.uploads_dir, blobs.files_dir) == (root / "uploads", root / "files")
    assert os.stat(root / "space-reserve").st_blocks * 512 >= MiB
    upload_id = new_upload_id()
    await blobs.create(upload_id)
    assert blobs.part_path(upload_id) == root / "uploads" / f"{upload_id}.part"
    assert blobs.part_path(upload_id).stat().st_mode & 0o777 == 0o600
    assert (await blobs.free_bytes()) > 0


async def test_a_new_blob_takes_no_space(blobs: LocalBlobs) -> None:
    upload_id = new_upload_id()
    await blobs.create(upload_id)
    writer = await blobs.open_writer(upload_id)
    writer.write_at(64 * MiB, b"x")  # sparse: only the page written takes blocks
    writer.close()
    assert os.stat(blobs.part_path(upload_id)).st_blocks * 512 < MiB


def _blocks(path: Path) -> int:
    return os.stat(path).st_blocks * 512


async def _written(blobs: LocalBlobs, claim_end: int, size: int) -> Path:
    """A new blob whose writer may claim up to ``claim_end`` and wrote ``size`` bytes at 0;
    its part file."""
    upload_id = new_upload_id()
    await blobs.create(upload_id)
    writer = await blobs.open_writer(upload_id)
    writer.claim_within(claim_end)
    writer.write_at(0, b"x" * size)
    writer.close()
    return blobs.part_path(upload_id)


async def test_a_writer_claims_a_window_ahead_within_its_end(blobs: LocalBlobs) -> None:
    part = await _written(blobs, 100 * MiB, MiB)
    # Claimed past the end of the file, whose size stays what was written.
    assert _blocks(part) >= MiB + ALLOCATE_AHEAD
    assert part.stat().st_size == MiB


async def test_a_writer_claims_nothing_past_its_end(blobs: LocalBlobs) -> None:
    part = await _written(blobs, 10 * MiB, MiB)
    assert 10 * MiB <= _blocks(part) < MiB + ALLOCATE_AHEAD


async def test_a_short_upload_claims_nothing_ahead(blobs: LocalBlobs) -> None:
    part = await _written(blobs, 10_000, 100)
    assert _blocks(part) < MiB


async def test_finishing_gives_back_blocks_claimed_past_the_length(blobs: LocalBlobs) -> None:
    part = await _written(blobs, 64 * MiB, MiB)
    assert _blocks(part) > 8 * MiB
    upload_id = part.name.removesuffix(".part")
    await blobs.finish(upload_id, MiB)  # a shorter upload (a deferred length, say)
    assert _blocks(blobs.file_path(upload_id)) < 2 * MiB


async def test_finish_is_a_rename_to_exactly_length_bytes(blobs: LocalBlobs) -> None:
    upload_id = new_upload_id()
    await blobs.create(upload_id)
    writer = await blobs.open_writer(upload_id)
    writer.write_at(0, b"0123456789")
    writer.close()
    inode = os.stat(blobs.part_path(upload_id)).st_ino
    await blobs.finish(upload_id, 12)
    assert not blobs.part_path(upload_id).exists()
    assert os.stat(blobs.file_path(upload_id)).st_ino == inode
    assert blobs.file_path(upload_id).read_bytes() == b"0123456789\0\0"


async def test_a_writer_after_the_rename_opens_the_file(blobs: LocalBlobs) -> None:
    upload_id = new_upload_id()
    await blobs.create(upload_id)
    await blobs.finish(upload_id, 0)
    writer = await blobs.open_writer(upload_id)
    writer.write_at(0, b"abc")
    writer.close()
    assert blobs.file_path(upload_id).read_bytes() == b"abc"
    assert not blobs.part_path(upload_id).exists()


async def test_open_local_wires_both_halves_and_drops_orphans(tmp_path: Path) -> None:
    data = tmp_path / "data"
    backend = open_local(data, metadata_reserve=MiB)
    kept = UploadSession(id=new_upload_id(), length=3, metadata={}, created=1.0, expires=None)
    await backend.sessions.create(kept)
    await backend.blobs.create(kept.id)
    done = UploadSession(id=new_upload_id(), length=0, metadata={}, created=2.0, expires=None)
    await backend.sessions.create(done)
    await backend.blobs.create(done.id)
    await backend.blobs.finish(done.id, 0)
    orphans = [new_upload_id(), new_upload_id()]
    await backend.blobs.create(orphans[0])
    await backend.blobs.create(orphans[1])
    await backend.blobs.finish(orphans[1], 0)
    (data / "uploads" / "README").write_text("not a blob")
    await backend.close()

    backend = open_local(data, metadata_reserve=MiB)
    try:
        blobs = backend.blobs
        assert isinstance(blobs, LocalBlobs)
        assert blobs.part_path(kept.id).exists() and blobs.file_path(done.id).exists()
        assert not blobs.part_path(orphans[0]).exists()
        assert not blobs.file_path(orphans[1]).exists()
        assert (data / "uploads" / "README").exists()
        assert await backend.sessions.load(kept.id) == kept
    finally:
        await backend.close()


async def test_the_reserve_goes_to_the_metadata_and_comes_back(tmp_path: Path) -> None:
    backend = open_local(tmp_path / "data", metadata_reserve=MiB)
    try:
        blobs = backend.blobs
        assert isinstance(blobs, LocalBlobs)
        assert blobs.space_reserve.held
        # What SQLite's on_full calls when the disk is full:
        assert blobs.give_reserve_to_metadata() is True
        assert blobs.give_reserve_to_metadata() is False
        assert not blobs.space_reserve.held
        await blobs.delete(new_upload_id())  # a deletion takes the reserve back
        assert blobs.space_reserve.held
    finally:
        await backend.close()
