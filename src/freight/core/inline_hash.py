"""The running SHA-256 fed by the writers themselves, for blob stores without cheap read-back.

Where bytes just written cannot be read again cheaply (an object store), the hash is taken
as contiguous bytes pass through a writer's buffers, in the worker thread that writes them.
Bytes that arrive out of order are not hashed here: when the prefix before them completes,
the engine hashes them from what the store still holds of them and moves the hash on
(:meth:`InlineHash.advance`); what the store no longer holds it reads from the finished
blob at finish.

On a store that reads back cheaply (a local disk) the same running hash is shared with
the hash follower (:mod:`freight.core.hash_follower`): writers whose bytes pass through
Python buffers (WebSocket frames, bodies not spliced) feed it from the buffer they just
wrote, while the follower hashes from the page cache what no writer fed (spliced bytes,
ranges written out of order), each through a compare-and-advance at the hash's position
(:meth:`InlineHash.feed`, :meth:`InlineHash.follow`), so no byte is hashed twice or skipped.

The hash runs ahead of what is recorded as received, and only a state at a recorded offset
may be saved (a restart resumes from there). So each step keeps the state it reached, and
:meth:`InlineHash.recorded` hands back the one at the newly recorded end; a writer that
ends with bytes hashed but not recorded rewinds the hash to the last recorded state.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from freight._types import Buffer
from freight.core.hashing import StatefulSha256

__all__ = ["InlineHash"]

# States kept ahead of the recorded offset: one per buffer written since the last record,
# so a few per writer; more means nothing recorded them for long, and the oldest go.
_MAX_AHEAD = 64


class InlineHash:
    """A hash at ``position`` that writers feed under a lock (they run in worker threads)."""

    def __init__(
        self,
        hasher: StatefulSha256,
        position: int,
        on_feed: Callable[[int], None] | None = None,
        *,
        followed: bool = False,
    ) -> None:
        # Whether the hash follower reads back what no writer feeds (a local disk): writers
        # may then leave bytes to it, spliced ones say. Else every contiguous byte must
        # pass through a writer's buffers to be hashed before finishing.
        self.followed = followed
        # Told where the hash stands after each feed, in the writer's thread: a store that
        # keeps out-of-order bytes for the hash lets go of those it has passed.
        self._on_feed = on_feed
        self._lock = threading.Lock()
        self._hasher = hasher
        self._position = position
        self._saved = (position, hasher.copy())
        self._ahead: OrderedDict[int, StatefulSha256] = OrderedDict()

    @property
    def position(self) -> int:
        return self._position

    def feed(self, offset: int, data: Buffer) -> None:
        """``data`` was written at ``offset``: hash what continues the hashed prefix."""
        view = memoryview(data).cast("B")
        with self._lock:
            skip = self._position - offset
            if 0 <= skip < view.nbytes:  # else out of order, or hashed already
                self._hasher.update(view[skip:])
                self._position = offset + view.nbytes
                self._ahead[self._position] = self._hasher.copy()
                while len(self._ahead) > _MAX_AHEAD:
                    self._ahead.popitem(last=False)
            position = self._position
        if self._on_feed is not None:
            self._on_feed(position)

    def recorded(self, contiguous_end: int) -> tuple[int, StatefulSha256] | None:
        """The bytes up to ``contiguous_end`` are recorded: the state to save, at the
        furthest point the hash reached within them (None: nothing new to save). The
        prefix may run past the hash (bytes that arrived out of order): the state where
        the hash stands is then saved, and the engine hashes on from there."""
        with self._lock:
            if contiguous_end <= self._saved[0]:
                return None
            within = [p for p in self._ahead if p <= contiguous_end]
            if not within:
                return None
            position = within[-1]  # states are kept in the order the hash reached them
            state = self._ahead[position]
            self._saved = (position, state)
            for done in within:
                del self._ahead[done]
            return position, state.copy()

    def follow(self, offset: int, data: Buffer) -> bool:
        """Recorded bytes read back from the store at ``offset``: hash them if the hash
        stands at ``offset`` (else a writer fed it meanwhile, or it was rewound, and the
        reader must stop). In the follower's thread, under the lock writers feed under."""
        with self._lock:
            if self._position != offset:
                return False
            self._hasher.update(data)
            self._position = offset + memoryview(data).nbytes
            return True

    def settle(self, position: int) -> tuple[int, StatefulSha256] | None:
        """The follower hashed recorded bytes up to ``position``: keep that as the state to
        rewind to, and return a copy to save (None if the hash moved on meanwhile)."""
        with self._lock:
            if self._position != position:
                return None
            self._saved = (position, self._hasher.copy())
            for done in [p for p in self._ahead if p <= position]:
                del self._ahead[done]
            return position, self._saved[1].copy()

    def advance(self, start: int, end: int, hasher: StatefulSha256) -> bool:
        """Recorded bytes ``[start, end)`` were hashed into ``hasher`` (a copy taken at
        ``start``) by someone other than the writers: go on from there, if the hash still
        stands at ``start`` (else a writer moved it meanwhile, and nothing changes)."""
        with self._lock:
            if self._position != start:
                return False
            self._hasher, self._position = hasher, end
            self._saved = (end, hasher.copy())
            self._ahead.clear()
            return True

    def rewind(self) -> None:
        """Forget hashed bytes beyond the last recorded state (their writer failed)."""
        with self._lock:
            position, state = self._saved
            if self._position > position:
                self._hasher, self._position = state.copy(), position
                self._ahead.clear()

    def current(self) -> tuple[int, StatefulSha256]:
        """Where the hash stands, and a copy of it (once no writer feeds it any more)."""
        with self._lock:
            return self._position, self._hasher.copy()
