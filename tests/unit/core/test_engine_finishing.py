"""Finishing in the background (core/finishing.py): the answer before the digest, when
nothing needs it, and every read of the upload meanwhile waiting for the finish."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

import pytest

from freight.core import hash_follower
from freight.core.engine import UploadEngine
from freight.core.hashing import new_sha256
from freight.core.inline_hash import InlineHash
from freight.core.session import UploadSession, UploadState
from freight.errors import ChecksumMismatch, UploadNotFound
from tests.unit.core.test_engine import sha256, write
from tests.unit.core.test_engine_hooks import RecordingHooks

MiB = 1024 * 1024
SETTLING = 0.3  # how long the slowed settle of the digest takes, at least


@pytest.fixture
def slow_settle(monkeypatch: pytest.MonkeyPatch) -> None:
    """What finishing has left to hash takes a while, as a trailing hash of 1 GiB does."""
    hash_range = hash_follower.hash_file_range

    def slow(*args: Any) -> None:
        time.sleep(SETTLING)
        hash_range(*args)

    monkeypatch.setattr(hash_follower, "hash_file_range", slow)


async def complete(engine: UploadEngine, data: bytes, **create: Any) -> UploadSession:
    """A complete upload whose hash has not followed its bytes yet."""
    session = await engine.create(length=len(data), metadata={"filename": "a.bin"}, **create)
    await write(engine, session.id, data)
    await engine.hashed(session.id)
    active = engine.uploads.get(session.id)
    assert active is not None
    if active.inline is not None and active.inline.followed:
        # As if the hash had trailed all along: finishing hashes.
        active.inline = InlineHash(new_sha256(), 0, followed=True)
        active.session.hashed_offset, active.session.hash_state = 0, None
    return session


@pytest.mark.local_blobs
@pytest.mark.usefixtures("slow_settle")
async def test_the_answer_comes_before_the_digest_and_reads_wait_for_it(
    engine: UploadEngine,
) -> None:
    data = os.urandom(3 * MiB + 5)
    session = await complete(engine, data)
    started = time.monotonic()
    answered = await engine.finish(session.id, digest_needed=False)
    assert time.monotonic() - started < SETTLING
    assert answered.state is UploadState.RECEIVING
    assert answered.is_complete and answered.offset == len(data)
    assert answered.sha256 is None
    assert engine.finishing_under_way(session.id)

    # Every read waits for the finish: none sees it complete but unfinished.
    got, page, every = await asyncio.gather(
        engine.get(session.id),
        engine.list_page("files", None, 10),
        engine.list_sessions(),
    )
    assert got.state is UploadState.FINISHED and got.sha256 == sha256(data)
    assert [(s.id, s.sha256) for s in page[0]] == [(session.id, sha256(data))]
    assert [s.state for s in every] == [UploadState.FINISHED]
    assert not engine.finishing_under_way(session.id)
    reader = await engine.open_reader(got)
    try:
        view = bytearray(16)
        assert reader.read_into(len(data) - 16, memoryview(view)) == 16
        assert bytes(view) == data[-16:]
    finally:
        reader.close()


@pytest.mark.local_blobs
@pytest.mark.usefixtures("slow_settle")
async def test_a_finish_asked_again_meanwhile_joins_the_one_under_way(
    engine: UploadEngine,
) -> None:
    data = os.urandom(2 * MiB)
    session = await complete(engine, data)
    await engine.finish(session.id, digest_needed=False)
    again = await engine.finish(session.id, digest_needed=False)
    assert again.state is UploadState.FINISHED and again.sha256 == sha256(data)
    with pytest.raises(ChecksumMismatch):
        await engine.finish(session.id, expected_sha256="0" * 64)
    assert (await engine.get(session.id)).sha256 == sha256(data)


@pytest.mark.local_blobs
@pytest.mark.usefixtures("slow_settle")
async def test_deleting_during_the_finish_waits_for_it(engine: UploadEngine) -> None:
    session = await complete(engine, os.urandom(MiB))
    await engine.finish(session.id, digest_needed=False)
    await engine.delete(session.id)
    with pytest.raises(UploadNotFound):
        await engine.get(session.id)


async def test_a_finish_that_must_check_a_digest_is_awaited(engine: UploadEngine) -> None:
    """A digest to check (declared at creation or now) is settled before the answer;
    so is every finish where the store does not read back (memory)."""
    data = os.urandom(MiB)
    declared = await complete(engine, data, declared_sha256=sha256(data))
    finished = await engine.finish(declared.id, digest_needed=False)
    assert finished.state is UploadState.FINISHED and finished.sha256 == sha256(data)
    checked = await complete(engine, data)
    with pytest.raises(ChecksumMismatch):
        await engine.finish(checked.id, expected_sha256="0" * 64, digest_needed=False)
    assert (await engine.get(checked.id)).state is UploadState.RECEIVING
    needed = await complete(engine, data)
    finished = await engine.finish(needed.id)
    assert finished.state is UploadState.FINISHED


@pytest.mark.local_blobs
async def test_a_pre_finish_hook_is_asked_before_the_answer(
    open_engine: Callable[..., UploadEngine],
) -> None:
    hooks = RecordingHooks()
    engine = open_engine(hooks=hooks)
    data = os.urandom(MiB)
    session = await complete(engine, data)
    finished = await engine.finish(session.id, digest_needed=False)
    assert finished.state is UploadState.FINISHED and finished.sha256 == sha256(data)


async def test_only_one_node_with_a_store_that_reads_back_finishes_after_answering(
    engine: UploadEngine, blob_kind: str
) -> None:
    data = os.urandom(MiB)
    session = await complete(engine, data)
    answered = await engine.finish(session.id, digest_needed=False)
    assert (answered.state is UploadState.RECEIVING) == (blob_kind == "local")
    assert (await engine.get(session.id)).sha256 == sha256(data)


@pytest.mark.local_blobs
async def test_a_failed_background_finish_leaves_the_upload_complete(
    engine: UploadEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(MiB)
    session = await complete(engine, data)
    hash_range = hash_follower.hash_file_range

    def failing(*args: Any) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(hash_follower, "hash_file_range", failing)
    await engine.finish(session.id, digest_needed=False)
    left = await engine.get(session.id)
    assert left.state is UploadState.RECEIVING and left.is_complete
    monkeypatch.setattr(hash_follower, "hash_file_range", hash_range)
    finished = await engine.finish(session.id)  # as the sweeper does later
    assert finished.sha256 == sha256(data)
