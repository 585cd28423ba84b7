"""A SHA-256 whose running state can be saved and restored.

Finishing a multi-gigabyte upload must not re-read it, and neither should a server restart
in the middle of one. hashlib cannot export its state, so this drives OpenSSL's SHA256_*
functions through ctypes: the state is a plain 112-byte ``SHA256_CTX`` we can store in
SQLite next to the offset it covers. ctypes releases the GIL during the call, so hashing in
a worker thread runs beside the event loop. Where libcrypto lacks those symbols we fall back
to hashlib and report no state, and the engine re-hashes from disk after a restart.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
from typing import Protocol

from freight._types import Buffer

__all__ = ["StatefulSha256", "new_sha256", "sha256_from_state"]

_CTX_SIZE = 112  # sizeof(SHA256_CTX): h[8], Nl, Nh, data[16], num, md_len (32-bit each)
_CTX_ALLOC = 256  # a margin in case a build pads the struct


class StatefulSha256(Protocol):
    def update(self, data: Buffer) -> None: ...
    def digest(self) -> bytes: ...
    def hexdigest(self) -> str: ...
    def state(self) -> bytes | None: ...
    def copy(self) -> StatefulSha256: ...


def _load_libcrypto() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("crypto")
    if not name:
        return None
    try:
        lib = ctypes.CDLL(name)
        for symbol in ("SHA256_Init", "SHA256_Update", "SHA256_Final"):
            getattr(lib, symbol)
    except (OSError, AttributeError):
        return None
    lib.SHA256_Init.argtypes = [ctypes.c_void_p]
    lib.SHA256_Update.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    lib.SHA256_Final.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    return lib


_LIB = _load_libcrypto()


class _OpenSslSha256:
    """SHA-256 over OpenSSL's low-level context, exportable with :meth:`state`."""

    __slots__ = ("_ctx",)

    def __init__(self, state: bytes | None = None) -> None:
        assert _LIB is not None
        self._ctx = ctypes.create_string_buffer(_CTX_ALLOC)
        if state is None:
            _LIB.SHA256_Init(self._ctx)
        else:
            if len(state) != _CTX_SIZE:
                raise ValueError("not a SHA-256 state")
            ctypes.memmove(self._ctx, state, _CTX_SIZE)

    def update(self, data: Buffer) -> None:
        if isinstance(data, bytes):
            _LIB.SHA256_Update(self._ctx, data, len(data))  # type: ignore[union-attr]
            return
        view = memoryview(data).cast("B")
        if view.readonly:
            # Read-only views (slices of bytes) cannot be lent to ctypes without a copy.
            self.update(view.tobytes())
            return
        if view.nbytes:
            block = (ctypes.c_char * view.nbytes).from_buffer(view)
            _LIB.SHA256_Update(self._ctx, block, view.nbytes)  # type: ignore[union-attr]

    def digest(self) -> bytes:
        scratch = ctypes.create_string_buffer(self._ctx.raw, _CTX_ALLOC)
        out = ctypes.create_string_buffer(32)
        _LIB.SHA256_Final(out, scratch)  # type: ignore[union-attr]
        return out.raw

    def hexdigest(self) -> str:
        return self.digest().hex()

    def state(self) -> bytes:
        return self._ctx.raw[:_CTX_SIZE]

    def copy(self) -> _OpenSslSha256:
        return _OpenSslSha256(self.state())


class _HashlibSha256:
    __slots__ = ("_hash",)

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def update(self, data: Buffer) -> None:
        self._hash.update(data)

    def digest(self) -> bytes:
        return self._hash.digest()

    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    def state(self) -> bytes | None:
        return None

    def copy(self) -> _HashlibSha256:
        clone = _HashlibSha256()
        clone._hash = self._hash.copy()
        return clone


def new_sha256() -> StatefulSha256:
    return _OpenSslSha256() if _LIB is not None else _HashlibSha256()


def sha256_from_state(state: bytes) -> StatefulSha256 | None:
    """Resume a saved SHA-256; None when the state cannot be restored here."""
    if _LIB is None:
        return None
    try:
        return _OpenSslSha256(state)
    except ValueError:
        return None
