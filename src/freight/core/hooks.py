"""Hooks: what the engine tells an application about uploads, and what it asks it.

The engine calls a :class:`Hooks` (the port; :class:`NoHooks` by default) at these points,
whichever protocol fed it; how an event reaches the application (a signed webhook, a
command) is the transport side's business (:mod:`freight.server.hooks`):

* ``pre-create`` (:meth:`Hooks.ask`, blocking): before a new upload is stored; the hook may
  refuse it (:class:`~freight.errors.HookRejected`, with its own status and message) or add
  metadata. Nothing is stored for a refused upload.
* ``post-create`` and ``post-receive`` (:meth:`Hooks.tell`, best effort, never waited for):
  an upload was created; bytes were recorded (at most once per
  ``UploadEngine.hook_progress_interval`` seconds per upload).
* ``pre-finish`` (blocking): the bytes are complete, the blob is not finished yet. A refusal
  terminates the upload: its record and bytes are deleted (a ``post-terminate`` says so) and
  the client gets the hook's status and message. A hook that cannot be reached refuses with
  :class:`~freight.errors.HookUnavailable` (503) unless the failure policy is to let uploads
  through; the upload then stays complete and unfinished, and the client (or the sweeper)
  finishing it again asks again.
* ``post-finish``, ``post-terminate``, ``post-expire`` (durable, at least once): the entry
  (:class:`~freight.core.ports.OutboxEntry`, from :meth:`Hooks.outbox`) is written by the
  same transaction that finishes or deletes the upload, and a delivery worker retries it
  until it is delivered. Its idempotency key (:func:`idempotency_key`) is the same for every
  attempt.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from freight.core.ports import OutboxEntry
from freight.core.session import UploadSession

__all__ = [
    "BLOCKING",
    "DURABLE",
    "HookEvent",
    "HookVerdict",
    "Hooks",
    "NoHooks",
    "hook_upload",
    "hook_user",
    "idempotency_key",
]


class HookEvent(enum.Enum):
    PRE_CREATE = "pre-create"
    POST_CREATE = "post-create"
    POST_RECEIVE = "post-receive"
    PRE_FINISH = "pre-finish"
    POST_FINISH = "post-finish"
    POST_TERMINATE = "post-terminate"
    POST_EXPIRE = "post-expire"


BLOCKING = frozenset({HookEvent.PRE_CREATE, HookEvent.PRE_FINISH})
DURABLE = frozenset({HookEvent.POST_FINISH, HookEvent.POST_TERMINATE, HookEvent.POST_EXPIRE})


@dataclass(frozen=True)
class HookVerdict:
    """A blocking hook let the upload through; ``metadata`` is what it adds (pre-create)."""

    metadata: Mapping[str, str] = field(default_factory=dict)


class Hooks(Protocol):
    """Where the engine sends hook events (see the module docs for when)."""

    def wants(self, event: HookEvent) -> bool:
        """Whether ``event`` goes anywhere (the engine skips the work for one that does not)."""

    async def ask(self, event: HookEvent, session: UploadSession) -> HookVerdict:
        """A blocking event; raises HookRejected (refused) or HookUnavailable (no answer
        and the policy is to refuse then)."""

    def tell(self, event: HookEvent, session: UploadSession) -> None:
        """A best-effort event: queued and sent in the background, never waited for."""

    def outbox(
        self, event: HookEvent, session: UploadSession, now: float, reason: str | None = None
    ) -> tuple[OutboxEntry, ...]:
        """The durable entries reporting ``event`` (none when it goes nowhere), to be
        written with the change they report."""

    def outbox_written(self) -> None:
        """Entries were committed: deliver them soon."""


class NoHooks:
    """No hooks: nothing is sent, nothing is asked."""

    def wants(self, event: HookEvent) -> bool:
        return False

    async def ask(self, event: HookEvent, session: UploadSession) -> HookVerdict:
        return HookVerdict()

    def tell(self, event: HookEvent, session: UploadSession) -> None:
        return None

    def outbox(
        self, event: HookEvent, session: UploadSession, now: float, reason: str | None = None
    ) -> tuple[OutboxEntry, ...]:
        return ()

    def outbox_written(self) -> None:
        return None


def idempotency_key(event: HookEvent, upload_id: str) -> str:
    """The same for every delivery of one event: each of these events happens once per
    upload (a compare-and-set or a delete decides which request makes it happen)."""
    return f"{event.value}:{upload_id}"


def hook_user(session: UploadSession) -> str | None:
    """The user an upload belongs to (None for uploads made with the admin token)."""
    return session.owner


def hook_upload(session: UploadSession) -> dict[str, Any]:
    """The upload as a hook payload shows it."""
    return {
        "id": session.id,
        "size": session.length,
        "offset": session.offset,
        "received_bytes": session.received.total(),
        "metadata": dict(session.metadata),
        "digest": {"sha-256": session.sha256} if session.sha256 else None,
        "declared_sha256": session.declared_sha256,
        "state": session.state.value,
        "concat": session.concat_kind.value if session.concat_kind else None,
        "created": session.created,
        "finished": session.finished,
    }


def payload_text(body: Mapping[str, Any]) -> str:
    """A payload as the JSON text stored and sent (compact, UTF-8, keys as given)."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))
