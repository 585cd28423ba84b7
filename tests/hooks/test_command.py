"""``--hook-cmd``: JSON on stdin, exit status and stdout decide pre-create, and durable
events are delivered through the command too."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from tests.hooks.test_webhook import tus_create, tus_upload

SCRIPT = """
import json, os, sys
body = json.load(sys.stdin)
event = os.environ["FREIGHT_HOOK_EVENT"]
with open(sys.argv[1], "a") as log:
    log.write(json.dumps({"event": event, "key": os.environ["FREIGHT_HOOK_ID"],
                          "body": body}) + "\\n")
name = body["upload"]["metadata"].get("filename") or ""
if event == "pre-create" and name.endswith(".exe"):
    print(json.dumps({"status": 403, "message": "no executables (command)"}))
    sys.exit(1)
if event == "pre-create":
    print(json.dumps({"metadata": {"seen-by": "command"}}))
"""


def logged(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_a_hook_command_decides_and_receives(tmp_path: Path, start_app: Any) -> None:
    script, log = tmp_path / "hook.py", tmp_path / "hook.log"
    script.write_text(SCRIPT)
    app = await start_app(hook_cmd=f"{sys.executable} {script} {log}", hook_secret=None)
    refused = await tus_create(app, "setup.exe", 10)
    assert refused.status == 403
    url, status, _ = await tus_upload(app, "notes.txt", b"hello" * 10)
    assert status == 204
    upload_id = url.rsplit("/", 1)[1]
    session = await app.engine.get(upload_id)
    assert session.metadata == {"filename": "notes.txt", "seen-by": "command"}
    deadline = time.monotonic() + 20
    while not any(entry["event"] == "post-finish" for entry in logged(log)):
        assert time.monotonic() < deadline, logged(log)
        await asyncio.sleep(0.05)
    events = [entry["event"] for entry in logged(log)]
    assert events[:2] == ["pre-create", "pre-create"]
    assert {"post-create", "pre-finish", "post-finish"} <= set(events)
    finished = next(e for e in logged(log) if e["event"] == "post-finish")
    assert finished["key"] == f"post-finish:{upload_id}"
    assert finished["body"]["upload"]["digest"]["sha-256"] == session.sha256
