"""``freight send`` reports success only for a file the server has finished, not merely for
an offset that reached the length (a server whose finishing failed reports exactly that)."""

from __future__ import annotations

import socket
from pathlib import Path

from aiohttp import web
from cli_support import LoopThread, cli_env, make_file, run_cli


class StuckTusServer:
    """Takes every byte of a tus upload, then never finishes it: a plain HEAD of the upload
    (the file itself) stays 409, as freight's server answers for an unfinished upload."""

    def __init__(self) -> None:
        self.offset = 0
        self.length = 0
        self.thread = LoopThread()
        self.port = 0
        self._runner: web.AppRunner | None = None

    def start(self) -> StuckTusServer:
        async def listen() -> int:
            app = web.Application()
            app.router.add_route("*", "/files/", self._collection)
            app.router.add_route("*", "/files/{id}", self._item)
            self._runner = web.AppRunner(app)
            await self._runner.setup()
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            site = web.SockSite(self._runner, sock)
            await site.start()
            return int(sock.getsockname()[1])

        self.port = self.thread.run(listen())
        return self

    def stop(self) -> None:
        if self._runner is not None:
            self.thread.run(self._runner.cleanup())
        self.thread.close()

    async def _collection(self, request: web.Request) -> web.Response:
        self.length = int(request.headers["Upload-Length"])
        return web.Response(status=201, headers={"Location": "/files/u", "Tus-Resumable": "1.0.0"})

    async def _item(self, request: web.Request) -> web.Response:
        tus = {"Tus-Resumable": "1.0.0"}
        if request.method == "PATCH":
            while await request.content.readany():
                pass
            self.offset = self.length
            return web.Response(status=204, headers={**tus, "Upload-Offset": str(self.offset)})
        if "Tus-Resumable" in request.headers:  # the tus HEAD: every byte is there
            state = {"Upload-Offset": str(self.offset), "Upload-Length": str(self.length)}
            return web.Response(status=200, headers={**tus, **state})
        return web.json_response(
            {"code": "ERR_UPLOAD_INCOMPLETE", "message": "not finished"}, status=409
        )


def test_send_fails_when_the_server_never_finishes_the_file(tmp_path: Path) -> None:
    source = tmp_path / "f.bin"
    make_file(source, 100_000)
    server = StuckTusServer().start()
    try:
        done = run_cli(
            "send",
            str(source),
            f"http://127.0.0.1:{server.port}",
            "--retries",
            "1",
            env=cli_env(tmp_path / "state"),
            timeout=60,
        )
    finally:
        server.stop()
    assert server.offset == 100_000  # the server acknowledged every byte...
    assert done.returncode != 0, done.stdout  # ...but never finished: no success
    assert "not finished" in done.stderr + done.stdout
