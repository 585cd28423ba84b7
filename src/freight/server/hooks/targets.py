"""One delivery of a hook event: to the webhook (``--hook-url``) or the command
(``--hook-cmd``), and what it answered.

A webhook is a ``POST`` of the JSON body, signed (:mod:`.signing`) when a secret is set; a
2xx answer delivers it, and its body (empty, or a JSON object) is the decision of a
blocking hook. A command gets the body on stdin, like tusd's file hooks; exit status 0
delivers it and its stdout is the decision; any other exit status refuses (a blocking
hook) or is a failed delivery (retried). No answer within the timeout, a connection
refused, another status, or a body that is not a JSON object: the delivery failed.

A decision is ``{"reject": true, "status": 403, "message": "..."}`` to refuse, or
``{"metadata": {"key": "value"}}`` to add metadata (pre-create); every key is optional.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

from freight.errors import HookRejected
from freight.server.hooks.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

__all__ = ["Answer", "CommandTarget", "Target", "WebhookTarget", "decision"]

# The most of an answer read: a decision is a few hundred bytes.
MAX_ANSWER = 64 * 1024
# Metadata a hook may add: at most this many keys, each key and value this long.
MAX_ADDED_KEYS = 32
MAX_ADDED_LENGTH = 1024


@dataclass(frozen=True)
class Answer:
    """``ok``: the target took the event. ``rejection``: a blocking hook's refusal."""

    ok: bool
    rejection: HookRejected | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    error: str | None = None

    @classmethod
    def failed(cls, error: str) -> Answer:
        return cls(ok=False, error=error)


class Target(Protocol):
    name: str

    async def send(self, event: str, key: str, body: bytes, attempt: int) -> Answer: ...

    async def close(self) -> None: ...


def decision(text: bytes, *, ok: bool = True, default_message: str = "") -> Answer:
    """An answer's body read as a decision (an empty body lets the upload through)."""
    if not text.strip():
        if ok:
            return Answer(ok=True)
        return Answer(ok=False, rejection=HookRejected(default_message), error=default_message)
    try:
        parsed: Any = json.loads(text)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        if ok:
            return Answer.failed("the hook's answer is not a JSON object")
        first_line = text.decode(errors="replace").strip().splitlines()[0][:500]
        return Answer(ok=False, rejection=HookRejected(first_line), error=default_message)
    rejected = parsed.get("reject") is True or not ok
    if rejected:
        status = parsed.get("status")
        said = parsed.get("message")
        refusal = HookRejected(
            said if isinstance(said, str) and said else default_message or "rejected",
            status=status if isinstance(status, int) else 400,
        )
        return Answer(ok=ok, rejection=refusal, error=None if ok else default_message)
    return Answer(ok=True, metadata=_added_metadata(parsed.get("metadata")))


def _added_metadata(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    added = {
        k: v
        for k, v in value.items()
        if isinstance(k, str)
        and isinstance(v, str)
        and len(k) <= MAX_ADDED_LENGTH
        and len(v) <= MAX_ADDED_LENGTH
        and k
    }
    return dict(list(added.items())[:MAX_ADDED_KEYS])


class WebhookTarget:
    """``POST`` to ``url`` with aiohttp's client, one session for every delivery."""

    name = "webhook"

    def __init__(self, url: str, secret: str | None, timeout: float) -> None:
        self.url = url
        self._secret = secret
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def send(self, event: str, key: str, body: bytes, attempt: int) -> Answer:
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "freight-hooks",
            "Freight-Hook-Event": event,
            "Freight-Hook-Id": key,
            "Idempotency-Key": key,
            "Freight-Hook-Attempt": str(attempt),
            TIMESTAMP_HEADER: str(timestamp),
        }
        if self._secret:
            headers[SIGNATURE_HEADER] = sign(self._secret, timestamp, body)
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.post(
                self.url, data=body, headers=headers, allow_redirects=False
            ) as response:
                text = await response.content.read(MAX_ANSWER)
                if not 200 <= response.status < 300:
                    return Answer.failed(f"the webhook answered HTTP {response.status}")
                return decision(text)
        except TimeoutError:
            return Answer.failed("the webhook did not answer in time")
        except (aiohttp.ClientError, OSError) as exc:
            return Answer.failed(f"the webhook is unreachable: {exc}"[:300])

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class CommandTarget:
    """Runs ``command`` (split like a shell would, run without one) per event."""

    name = "command"

    def __init__(self, command: str, timeout: float) -> None:
        self.argv = shlex.split(command)
        self._timeout = timeout

    async def send(self, event: str, key: str, body: bytes, attempt: int) -> Answer:
        environment = {
            **os.environ,
            "FREIGHT_HOOK_EVENT": event,
            "FREIGHT_HOOK_ID": key,
            "FREIGHT_HOOK_ATTEMPT": str(attempt),
        }
        try:
            process = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                env=environment,
            )
        except OSError as exc:
            return Answer.failed(f"cannot run the hook command: {exc.strerror or exc}")
        try:
            stdout, _ = await asyncio.wait_for(process.communicate(body), self._timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
            return Answer.failed("the hook command did not finish in time")
        if process.returncode == 0:
            return decision(stdout[:MAX_ANSWER])
        return decision(
            stdout[:MAX_ANSWER],
            ok=False,
            default_message=f"the hook command refused (exit status {process.returncode})",
        )

    async def close(self) -> None:
        return None
