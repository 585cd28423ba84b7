"""At least once: post-finish events survive a receiver that is down and servers killed
with SIGKILL (separate ``freight serve`` processes on one data directory)."""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

from helpers import create_upload, patch_stream

from tests.conftest import ServerProcess
from tests.hooks.receiver import SECRET, Receiver

UPLOADS = 20
RUNS = 3  # three servers: the first two are killed with SIGKILL


def test_every_post_finish_arrives_after_the_receiver_returns(
    receiver: Receiver, server_factory: type[ServerProcess], tmp_path: Path
) -> None:
    receiver.stop()  # down for every upload and both kills
    data_dir = tmp_path / "data"
    args = [
        "--hook-url", receiver.url,
        "--hook-secret", SECRET,
        "--hooks", "post-finish",
        "--hook-timeout", "2",
        "--hook-retry-max", "1",
    ]  # fmt: skip
    uploaded: list[str] = []
    for run in range(RUNS):
        server = server_factory(data_dir=data_dir, args=args).start()
        for n in range(run * UPLOADS // RUNS, (run + 1) * UPLOADS // RUNS):
            data = os.urandom(1000 + n)
            url = create_upload(server.url, len(data), {"filename": f"f{n}.bin"})
            reply = patch_stream(url, 0, [data], len(data))
            assert reply.status == 204, reply.status
            uploaded.append(url.rsplit("/", 1)[1])
        if run < RUNS - 1:
            server.kill()
            assert server.proc is not None and server.proc.returncode == -9
    assert len(uploaded) == UPLOADS
    receiver.start()  # back, on the same port
    receiver.wait_for("post-finish", UPLOADS, timeout=90)
    got = receiver.events("post-finish")
    assert sorted({r.body["upload"]["id"] for r in got}) == sorted(uploaded)  # none lost
    # A duplicate (a delivery cut by a kill) carries the same key and the same body.
    for upload_id, count in Counter(r.body["upload"]["id"] for r in got).items():
        copies = [r for r in got if r.body["upload"]["id"] == upload_id]
        assert {r.key for r in copies} == {f"post-finish:{upload_id}"}, count
        assert all(r.body == copies[0].body for r in copies)
    assert all(r.signed for r in got)


def test_a_delivery_cut_by_a_kill_is_repeated_under_the_same_key(
    receiver: Receiver, server_factory: type[ServerProcess], tmp_path: Path
) -> None:
    receiver.holding = True  # no answer before the server is gone
    args = [
        "--hook-url", receiver.url,
        "--hook-secret", SECRET,
        "--hooks", "post-finish",
        "--hook-timeout", "8",
        "--hook-retry-max", "1",
    ]  # fmt: skip
    server = server_factory(data_dir=tmp_path / "data", args=args).start()
    uploaded = []
    for n in range(3):
        data = os.urandom(500 + n)
        url = create_upload(server.url, len(data), {"filename": f"f{n}.bin"})
        assert patch_stream(url, 0, [data], len(data)).status == 204
        uploaded.append(url.rsplit("/", 1)[1])
    receiver.wait_for("post-finish", 3, timeout=20)  # all three in flight
    server.kill()
    receiver.holding = False
    server_factory(data_dir=tmp_path / "data", args=args).start()
    # Taken again once the dead server's lease (8 s timeout + 10 s) runs out.
    deadline = time.monotonic() + 90
    while len(receiver.events("post-finish")) < 6:
        assert time.monotonic() < deadline, [r.key for r in receiver.events("post-finish")]
        time.sleep(0.1)
    got = receiver.events("post-finish")
    counts = Counter(r.body["upload"]["id"] for r in got)
    assert counts == {upload_id: 2 for upload_id in uploaded}
    for upload_id in uploaded:
        copies = [r for r in got if r.body["upload"]["id"] == upload_id]
        assert {r.key for r in copies} == {f"post-finish:{upload_id}"}
        assert copies[0].body == copies[1].body
        assert [r.headers["Freight-Hook-Attempt"] for r in copies] == ["1", "1"]
