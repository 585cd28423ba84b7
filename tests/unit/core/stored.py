"""What engine tests read back from the engine's backend, whichever blob store it has."""

from __future__ import annotations

from freight.core.engine import UploadEngine
from freight.storage.local_blobs import LocalBlobs


def local(engine: UploadEngine) -> LocalBlobs:
    """The engine's local blob store (tests marked ``local_blobs`` only)."""
    assert isinstance(engine.blobs, LocalBlobs)
    return engine.blobs


async def stored_bytes(engine: UploadEngine, upload_id: str) -> bytes:
    """A finished upload's bytes, read through the blob store's reader."""
    session = await engine.sessions.load(upload_id)
    reader = await engine.blobs.open_reader(upload_id)
    try:
        buffer = bytearray(session.length or 0)
        view = memoryview(buffer)
        done = 0
        while done < len(buffer):
            got = reader.read_into(done, view[done:])
            assert got > 0, "the blob is shorter than its session says"
            done += got
        assert reader.read_into(done, memoryview(bytearray(1))) == 0, "the blob is longer"
        return bytes(buffer)
    finally:
        reader.close()
