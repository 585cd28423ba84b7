"""The engine's :class:`~freight.core.hooks.Hooks`, delivered by webhook and/or command.

* Blocking events (``pre-create``, ``pre-finish``) go to every target in turn, each within
  ``--hook-timeout``; the first refusal is raised. A target that fails (no answer, an error
  status, a command that cannot run) refuses with 503 (:class:`HookUnavailable`): the
  default, fail closed. With ``--hook-fail-open`` it lets the upload through (logged).
* Best-effort events (``post-create``, ``post-receive``) go through a bounded queue, one
  attempt each; when the queue is full the event is dropped (counted).
* Durable events (``post-finish``, ``post-terminate``, ``post-expire``) become outbox
  entries the engine writes with the change they report; :mod:`.outbox_worker` delivers
  them. Their payload is built when the change is made, so a retry sends the same body.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from freight.config import ServerConfig
from freight.core.hooks import (
    HookEvent,
    HookVerdict,
    hook_upload,
    hook_user,
    idempotency_key,
    payload_text,
)
from freight.core.ports import HookOutbox, OutboxEntry
from freight.core.session import UploadSession
from freight.errors import HookUnavailable
from freight.server.hooks.context import current_request
from freight.server.hooks.outbox_worker import OutboxWorker
from freight.server.hooks.targets import Answer, CommandTarget, Target, WebhookTarget

__all__ = ["HOOKS", "HookDispatcher", "HookObserver", "HookSettings", "parse_events"]

log = logging.getLogger("freight.server.hooks")

# Best-effort events waiting to be sent, at most (then they are dropped).
QUEUE_LIMIT = 1000


def parse_events(names: tuple[str, ...]) -> frozenset[HookEvent]:
    """``--hooks`` values (empty: every event); raises ValueError naming an unknown one."""
    if not names:
        return frozenset(HookEvent)
    known = {event.value: event for event in HookEvent}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"unknown hook events {unknown}; known: {', '.join(known)}")
    return frozenset(known[name] for name in names)


@dataclass(frozen=True)
class HookSettings:
    url: str | None
    command: str | None
    secret: str | None
    events: frozenset[HookEvent]
    timeout: float = 10.0
    fail_open: bool = False
    retry_max: float = 300.0

    @classmethod
    def from_config(cls, config: ServerConfig) -> HookSettings | None:
        """The hooks ``config`` asks for; None when it names neither a URL nor a command."""
        if not (config.hook_url or config.hook_cmd):
            return None
        return cls(
            url=config.hook_url,
            command=config.hook_cmd,
            secret=config.hook_secret,
            events=parse_events(config.hooks),
            timeout=config.hook_timeout,
            fail_open=config.hook_fail_open,
            retry_max=config.hook_retry_max,
        )


class HookObserver(Protocol):
    """Where deliveries are counted (the metrics)."""

    def hook_sent(self, event: str, target: str, ok: bool, seconds: float) -> None: ...

    def hook_dropped(self, event: str) -> None: ...


class _Unobserved:
    def hook_sent(self, event: str, target: str, ok: bool, seconds: float) -> None:
        return None

    def hook_dropped(self, event: str) -> None:
        return None


class HookDispatcher:
    """Hooks to ``settings``' targets; :meth:`start` runs the delivery tasks."""

    def __init__(self, settings: HookSettings, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self.targets: list[Target] = []
        if settings.url:
            self.targets.append(WebhookTarget(settings.url, settings.secret, settings.timeout))
        if settings.command:
            self.targets.append(CommandTarget(settings.command, settings.timeout))
        self.observer: HookObserver = _Unobserved()
        self.outbox_store: HookOutbox | None = None
        self._queue: asyncio.Queue[tuple[HookEvent, str, bytes]] = asyncio.Queue(QUEUE_LIMIT)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    # the engine's port ---------------------------------------------------------------------

    def wants(self, event: HookEvent) -> bool:
        return event in self.settings.events

    async def ask(self, event: HookEvent, session: UploadSession) -> HookVerdict:
        key = idempotency_key(event, session.id)
        body = payload_text(self._payload(event, session, key)).encode()
        added: dict[str, str] = {}
        for target in self.targets:
            answer = await self._send(target, event.value, key, body, 1)
            if answer.rejection is not None:
                raise answer.rejection
            if not answer.ok:
                if not self.settings.fail_open:
                    raise HookUnavailable(f"the {event.value} hook failed: {answer.error}")
                log.warning("the %s hook failed, let through: %s", event.value, answer.error)
                continue
            added.update(answer.metadata)
        return HookVerdict(metadata=added)

    def tell(self, event: HookEvent, session: UploadSession) -> None:
        if not self.wants(event):
            return
        key = idempotency_key(event, session.id)
        body = payload_text(self._payload(event, session, key)).encode()
        try:
            self._queue.put_nowait((event, key, body))
        except asyncio.QueueFull:
            self.observer.hook_dropped(event.value)

    def outbox(
        self, event: HookEvent, session: UploadSession, now: float, reason: str | None = None
    ) -> tuple[OutboxEntry, ...]:
        if not self.wants(event):
            return ()
        key = idempotency_key(event, session.id)
        body = payload_text(self._payload(event, session, key, reason))
        return (OutboxEntry(key, event.value, session.id, body, now, due=now),)

    def outbox_written(self) -> None:
        self._wake.set()

    # delivery --------------------------------------------------------------------------------

    async def deliver(self, entry: OutboxEntry) -> str | None:
        """Send a durable entry to every target; None when all took it, else why not."""
        for target in self.targets:
            answer = await self._send(
                target, entry.event, entry.key, entry.payload.encode(), entry.attempts + 1
            )
            if not answer.ok:
                return f"{target.name}: {answer.error}"
        return None

    async def _send(
        self, target: Target, event: str, key: str, body: bytes, attempt: int
    ) -> Answer:
        started = time.perf_counter()
        answer = await target.send(event, key, body, attempt)
        self.observer.hook_sent(event, target.name, answer.ok, time.perf_counter() - started)
        return answer

    def _payload(
        self, event: HookEvent, session: UploadSession, key: str, reason: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "event": event.value,
            "idempotency_key": key,
            "time": self.clock(),
            "upload": hook_upload(session),
            "user": hook_user(session),
            "request": current_request(),
        }
        if reason is not None:
            body["reason"] = reason
        return body

    async def _send_told(self) -> None:
        while True:
            event, key, body = await self._queue.get()
            for target in self.targets:
                answer = await self._send(target, event.value, key, body, 1)
                if not answer.ok:
                    log.debug("the %s hook was not delivered: %s", event.value, answer.error)

    # lifecycle --------------------------------------------------------------------------------

    def start(self, outbox: HookOutbox) -> None:
        """Start sending: the best-effort queue, and the worker delivering ``outbox``."""
        self.outbox_store = outbox
        if self.settings.url and not self.settings.secret:
            log.warning("--hook-url without --hook-secret: webhook bodies are not signed")
        worker = OutboxWorker(
            outbox,
            self.deliver,
            self._wake,
            # A lease outlasts one delivery to every target, so no other node takes it.
            lease=len(self.targets) * self.settings.timeout + 10.0,
            retry_max=self.settings.retry_max,
            clock=self.clock,
        )
        self._tasks = [
            asyncio.ensure_future(self._send_told()),
            asyncio.ensure_future(worker.run()),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            # Cancelled until done: a cancel can be lost in a library's own wait.
            while not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=1.0)
            with contextlib.suppress(asyncio.CancelledError, Exception):
                task.result()
        for target in self.targets:
            await target.close()


HOOKS = web.AppKey("freight.hooks", HookDispatcher)
