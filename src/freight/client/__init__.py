"""The freight client library: upload, download, list and delete files on a freight server.

No terminal I/O here (the ``freight`` CLI renders progress and errors); every operation is an
``async`` function taking callbacks for progress and retry notices::

    options = TransferOptions(token=None, resume_store=ResumeStore())
    result = await upload_file("disk.img", "http://127.0.0.1:8080", options)
    fetched = await download_file(result.url, "copy.img", options)
"""

from freight.client.download import DownloadInfo, DownloadResult, download_file
from freight.client.errors import (
    ClientError,
    ConnectionFailed,
    DigestMismatch,
    LocalFileChanged,
    ProtocolViolation,
    ServerError,
)
from freight.client.files import RemoteFile, delete_file, list_files
from freight.client.http import RetryNotice, RetryPolicy, Timeouts
from freight.client.options import TransferOptions
from freight.client.resume_store import ResumeStore, default_state_dir
from freight.client.upload import UploadResult, upload_file

__all__ = [
    "ClientError",
    "ConnectionFailed",
    "DigestMismatch",
    "DownloadInfo",
    "DownloadResult",
    "LocalFileChanged",
    "ProtocolViolation",
    "RemoteFile",
    "ResumeStore",
    "RetryNotice",
    "RetryPolicy",
    "ServerError",
    "Timeouts",
    "TransferOptions",
    "UploadResult",
    "default_state_dir",
    "delete_file",
    "download_file",
    "list_files",
    "upload_file",
]
