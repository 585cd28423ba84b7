"""The engine as a state machine: writes that commit, fail their checksum or break off midway,
restarts, HEAD and finish, checked against a model that is just the bytes accepted so far."""

from __future__ import annotations

import asyncio
import hashlib
import random
import shutil
import tempfile
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from freight.config import FsyncPolicy
from freight.core.buffers import LARGE_BUFFER as BUFFER_SIZE
from freight.core.engine import UploadEngine
from freight.core.writer import RequestChecksum
from freight.errors import ChecksumMismatch, LengthMismatch, OffsetMismatch, UploadIncomplete
from freight.storage.local import open_local
from freight.storage.local_blobs import LocalBlobs

T = TypeVar("T")

# Mostly a few KiB; sometimes long enough to fill the 1 MiB buffers, so that the writer hands
# buffers off and records checkpoints (every ``sync_every`` bytes, checked per buffer).
LENGTHS = st.one_of(st.integers(0, 12 * 1024), st.integers(2 * BUFFER_SIZE, 2 * BUFFER_SIZE + 9000))
WRITE_SIZES = st.one_of(st.integers(1, 6000), st.just(3 * BUFFER_SIZE))


class ConnectionDropped(Exception):
    pass


class EngineMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.data_dir = Path(tempfile.mkdtemp(prefix="freight-machine-"))
        self.engine = self.open_engine()
        self.upload_id = ""
        self.content = b""
        self.declared = False
        self.accepted = 0  # the model: content[:accepted] is what the engine holds
        self.finished = False

    def open_engine(self) -> UploadEngine:
        return UploadEngine(open_local(self.data_dir), fsync=FsyncPolicy.BATCH, sync_every=4096)

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(work)

    @property
    def store(self) -> LocalBlobs:
        assert isinstance(self.engine.blobs, LocalBlobs)
        return self.engine.blobs

    def teardown(self) -> None:
        try:
            self.run(self.engine.close())
            self.run(self.loop.shutdown_default_executor())
        finally:
            self.loop.close()
            shutil.rmtree(self.data_dir, ignore_errors=True)

    @initialize(length=LENGTHS, deferred=st.booleans(), seed=st.integers(0, 2**32))
    def create(self, length: int, deferred: bool, seed: int) -> None:
        self.content = random.Random(seed).randbytes(length)
        session = self.run(self.engine.create(length=None if deferred else length, metadata={}))
        self.upload_id = session.id
        self.declared = not deferred

    # writing ----------------------------------------------------------------------------------

    async def send(self, body: bytes, piece: int, checksum: RequestChecksum | None) -> None:
        """One request: ``body`` at the accepted offset in pieces of about ``piece`` bytes."""
        piece = max(piece, len(body) // 50)
        async with self.engine.writer(self.upload_id, self.accepted, checksum=checksum) as w:
            for start in range(0, len(body), piece):
                await w.write(body[start : start + piece])
            await w.commit()

    async def send_then_drop(self, body: bytes, piece: int) -> None:
        piece = max(piece, len(body) // 50)
        async with self.engine.writer(self.upload_id, self.accepted) as w:
            for start in range(0, len(body), piece):
                await w.write(body[start : start + piece])
            raise ConnectionDropped

    def body(self, size: int) -> bytes:
        return self.content[self.accepted : self.accepted + size]

    @precondition(lambda self: not self.finished and self.accepted < len(self.content))
    @rule(size=WRITE_SIZES, piece=st.integers(1, 70_000), with_checksum=st.booleans())
    def write(self, size: int, piece: int, with_checksum: bool) -> None:
        body = self.body(size)
        checksum = None
        if with_checksum:
            checksum = RequestChecksum("sha1", hashlib.sha1(body).digest(), hashlib.sha1())
        self.run(self.send(body, piece, checksum))
        self.accepted += len(body)

    @precondition(lambda self: not self.finished and self.accepted < len(self.content))
    @rule(size=WRITE_SIZES, piece=st.integers(1, 70_000), flip=st.integers(0, 2**31))
    def write_with_a_bad_checksum(self, size: int, piece: int, flip: int) -> None:
        body = self.body(size)
        corrupted = bytearray(body)
        corrupted[flip % len(corrupted)] ^= 0x01
        checksum = RequestChecksum("sha1", hashlib.sha1(body).digest(), hashlib.sha1())
        with pytest.raises(ChecksumMismatch):
            self.run(self.send(bytes(corrupted), piece, checksum))

    @precondition(lambda self: not self.finished and self.accepted < len(self.content))
    @rule(size=WRITE_SIZES, piece=st.integers(1, 70_000), fraction=st.floats(0, 1))
    def write_and_drop_midway(self, size: int, piece: int, fraction: float) -> None:
        body = self.body(size)
        sent = body[: int(len(body) * fraction)]
        with pytest.raises(ConnectionDropped):
            self.run(self.send_then_drop(sent, piece))
        self.accepted += len(sent)

    @precondition(lambda self: not self.finished)
    @rule(skew=st.sampled_from([-1, 1]))
    def write_at_the_wrong_offset(self, skew: int) -> None:
        wrong = self.accepted + skew
        if wrong < 0:
            return

        async def attempt() -> None:
            async with self.engine.writer(self.upload_id, wrong):
                pass

        with pytest.raises(OffsetMismatch) as caught:
            self.run(attempt())
        assert caught.value.offset == self.accepted

    # lengths, state, restarts -----------------------------------------------------------------

    @precondition(lambda self: not self.declared)
    @rule()
    def declare_length(self) -> None:
        if self.accepted:
            with pytest.raises(LengthMismatch):
                self.run(self.engine.declare_length(self.upload_id, self.accepted - 1))
        session = self.run(self.engine.declare_length(self.upload_id, len(self.content)))
        assert session.length == len(self.content)
        self.declared = True

    @rule()
    def head(self) -> None:
        session = self.run(self.engine.get(self.upload_id))
        stored = self.run(self.engine.sessions.load(self.upload_id))
        assert session.offset == stored.offset == self.accepted
        assert session.length == stored.length == (len(self.content) if self.declared else None)
        assert stored.hashed_offset <= stored.offset
        if self.finished:
            path = self.store.file_path(self.upload_id)
        else:
            path = self.store.part_path(self.upload_id)
        with path.open("rb") as file:
            assert file.read(self.accepted) == self.content[: self.accepted]

    @rule()
    def restart(self) -> None:
        self.run(self.engine.close())
        self.engine = self.open_engine()

    @precondition(lambda self: not self.finished)
    @rule()
    def finish_too_early(self) -> None:
        if self.declared and self.accepted == len(self.content):
            return
        with pytest.raises(UploadIncomplete) as caught:
            self.run(self.engine.finish(self.upload_id))
        if self.declared:
            assert caught.value.details["missing"] == [[self.accepted, len(self.content)]]

    @precondition(
        lambda self: self.declared and not self.finished and self.accepted == len(self.content)
    )
    @rule(check_first=st.booleans())
    def finish(self, check_first: bool) -> None:
        expected = hashlib.sha256(self.content).hexdigest()
        if check_first:
            with pytest.raises(ChecksumMismatch):
                self.run(self.engine.finish(self.upload_id, expected_sha256="ab" * 32))
        session = self.run(self.engine.finish(self.upload_id, expected_sha256=expected))
        assert session.sha256 == expected
        assert self.store.file_path(self.upload_id).read_bytes() == self.content
        self.finished = True


EngineMachine.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


TestEngineMachine = EngineMachine.TestCase
