"""Every error freight raises on purpose.

Each error carries a stable ``code`` (shown to clients, never renamed) and a ``status`` hint:
the HTTP status a transport should use. The core and the codecs never build responses; each
transport maps these errors to its wire format in exactly one function.
"""

from __future__ import annotations

import errno
from typing import Any, ClassVar

__all__ = [
    "BadRequest",
    "ChecksumMismatch",
    "ChunkOutOfRange",
    "ClientDisconnected",
    "ConcatenationError",
    "FreightError",
    "HookRejected",
    "HookUnavailable",
    "InsufficientStorage",
    "InvalidHeader",
    "LengthMismatch",
    "MethodNotAllowed",
    "OffsetMismatch",
    "PieceOffsetMismatch",
    "PreconditionFailed",
    "QuotaExceeded",
    "RangeAlreadyReceived",
    "RangeNotSatisfiable",
    "ResourcesExhausted",
    "ServerBusy",
    "StorageUnavailable",
    "TooManyUploads",
    "Unauthorized",
    "UnsupportedChecksumAlgorithm",
    "UnsupportedMediaType",
    "UnsupportedVersion",
    "UploadCapacityReached",
    "UploadCompleted",
    "UploadExpired",
    "UploadForbidden",
    "UploadIncomplete",
    "UploadLocked",
    "UploadNotFound",
    "UploadTooLarge",
    "UserExists",
    "storage_os_error",
]


class FreightError(Exception):
    """Root of every error freight raises deliberately."""

    code: ClassVar[str] = "ERR_INTERNAL"
    status: ClassVar[int] = 500

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, **self.details}


class BadRequest(FreightError):
    code = "ERR_BAD_REQUEST"
    status = 400


class InvalidHeader(BadRequest):
    """A header is present but malformed (the message names it)."""

    code = "ERR_INVALID_HEADER"


class LengthMismatch(BadRequest):
    """The body or a declared length contradicts what the upload already knows."""

    code = "ERR_LENGTH_MISMATCH"


class ClientDisconnected(BadRequest):
    """The body stopped before its end; what arrived intact was kept."""

    code = "ERR_DISCONNECTED"


class UnsupportedChecksumAlgorithm(BadRequest):
    code = "ERR_CHECKSUM_ALGORITHM"


class Unauthorized(FreightError):
    code = "ERR_UNAUTHORIZED"
    status = 401


class UploadForbidden(FreightError):
    """The operation is not allowed on this upload (e.g. PATCH on a final concatenation)."""

    code = "ERR_FORBIDDEN"
    status = 403


class UploadNotFound(FreightError):
    code = "ERR_UPLOAD_NOT_FOUND"
    status = 404


class MethodNotAllowed(FreightError):
    code = "ERR_METHOD_NOT_ALLOWED"
    status = 405


class OffsetMismatch(FreightError):
    """The client's offset is not where the upload stands; ``details['offset']`` is."""

    code = "ERR_OFFSET_MISMATCH"
    status = 409

    def __init__(self, message: str, *, offset: int, **details: Any) -> None:
        super().__init__(message, offset=offset, **details)
        self.offset = offset


class RangeAlreadyReceived(FreightError):
    """Bytes in this range were already received; they are never rewritten."""

    code = "ERR_ALREADY_RECEIVED"
    status = 409


class PieceOffsetMismatch(FreightError):
    """A piece of a chunk (chunk API) does not start where the chunk's received bytes end;
    ``details['chunk_offset']`` is that place, counted from the chunk's first byte."""

    code = "ERR_PIECE_OFFSET"
    status = 409

    def __init__(self, message: str, *, chunk_offset: int) -> None:
        super().__init__(message, chunk_offset=chunk_offset)
        self.chunk_offset = chunk_offset


class AmbiguousId(FreightError):
    """A typed id prefix matches several stored files; the message names them."""

    code = "ERR_AMBIGUOUS_ID"
    status = 409


class UploadIncomplete(FreightError):
    """The upload cannot be used yet because bytes are missing."""

    code = "ERR_UPLOAD_INCOMPLETE"
    status = 409


class ConcatenationError(BadRequest):
    code = "ERR_CONCATENATION"


class UploadCompleted(BadRequest):
    """The upload is finished and takes no more bytes (IETF problem ``completed-upload``)."""

    code = "ERR_UPLOAD_COMPLETED"


class UploadExpired(FreightError):
    code = "ERR_UPLOAD_EXPIRED"
    status = 410


class PreconditionFailed(FreightError):
    code = "ERR_PRECONDITION_FAILED"
    status = 412


class UnsupportedVersion(PreconditionFailed):
    code = "ERR_UNSUPPORTED_VERSION"


class UploadTooLarge(FreightError):
    code = "ERR_TOO_LARGE"
    status = 413


class QuotaExceeded(FreightError):
    """The upload would take its owner over their byte or file quota."""

    code = "ERR_QUOTA_EXCEEDED"
    status = 413


class UserExists(FreightError):
    code = "ERR_USER_EXISTS"
    status = 409


class UnsupportedMediaType(FreightError):
    code = "ERR_UNSUPPORTED_MEDIA_TYPE"
    status = 415


class RangeNotSatisfiable(FreightError):
    code = "ERR_RANGE_NOT_SATISFIABLE"
    status = 416

    def __init__(self, message: str, *, size: int) -> None:
        super().__init__(message, size=size)
        self.size = size


class ChunkOutOfRange(FreightError):
    """A chunk number past an upload's last chunk; ``details['chunk_count']`` says how many."""

    code = "ERR_CHUNK_OUT_OF_RANGE"
    status = 416


class UploadLocked(FreightError):
    """Another request is writing the same bytes of this upload right now."""

    code = "ERR_UPLOAD_LOCKED"
    status = 423


class ChecksumMismatch(FreightError):
    """The body does not match the checksum the client sent; nothing was kept."""

    code = "ERR_CHECKSUM_MISMATCH"
    status = 460


class InsufficientStorage(FreightError):
    code = "ERR_INSUFFICIENT_STORAGE"
    status = 507


class TooManyUploads(FreightError):
    """This client has as many unfinished uploads as it may; finish or delete some first."""

    code = "ERR_TOO_MANY_UPLOADS"
    status = 429


class UploadCapacityReached(TooManyUploads):
    """The server holds as many unfinished uploads as it takes; try again later."""

    code = "ERR_UPLOAD_CAPACITY"
    status = 503


class ResourcesExhausted(FreightError):
    """The server is out of open files (or kernel memory) for now; retry shortly."""

    code = "ERR_RESOURCES_EXHAUSTED"
    status = 503


_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def storage_os_error(exc: OSError) -> FreightError:
    """The typed error for an operating-system failure on the storage path."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return InsufficientStorage("the server's disk is full")
    if exc.errno in _EXHAUSTED:
        return ResourcesExhausted(f"the server is out of resources: {exc.strerror or exc}")
    return FreightError(f"storage failure: {exc.strerror or exc}")


class StorageUnavailable(FreightError):
    """A shared store (the session database, the object store) could not be reached or did
    not answer in time. Retry shortly; whether a change under way when it failed was made
    is unknown."""

    code = "ERR_STORAGE_UNAVAILABLE"
    status = 503


class ServerBusy(FreightError):
    """The server holds as many of these connections as it allows; retry later."""

    code = "ERR_SERVER_BUSY"
    status = 503


class HookRejected(FreightError):
    """A blocking hook (``pre-create``, ``pre-finish``) refused the upload; the status and
    message are the hook's own (a 4xx status; 400 when it gave none)."""

    code = "ERR_HOOK_REJECTED"
    status = 400

    def __init__(self, message: str, status: int = 400, **details: Any) -> None:
        super().__init__(message, **details)
        if 400 <= status <= 499:
            # Per instance: the hook chooses it (the class's is only the default).
            setattr(self, "status", status)  # noqa: B010


class HookUnavailable(FreightError):
    """A blocking hook did not answer in time or failed, and the failure policy is to refuse
    (``--hook-fail-open`` not set). Retry later."""

    code = "ERR_HOOK_UNAVAILABLE"
    status = 503
