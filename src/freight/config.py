"""Server settings: one frozen value built by the CLI and read by every layer."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["FsyncPolicy", "ServerConfig", "StartupError", "normalise_base_path"]

_SEGMENT = re.compile(r"[A-Za-z0-9._~-]+")


class StartupError(Exception):
    """The server cannot start as configured (a busy port, an unusable data directory, a
    bad config file): one line for the operator, no traceback."""


class FsyncPolicy(enum.Enum):
    """When received bytes are forced to disk before they are acknowledged.

    ``always``: after every buffer written. ``batch``: at the end of every request and at
    least every ``ServerConfig.sync_every`` bytes inside one. ``never``: leave it to the
    kernel; a server crash loses nothing, a power cut may lose acknowledged bytes.
    """

    ALWAYS = "always"
    BATCH = "batch"
    NEVER = "never"


@dataclass(frozen=True)
class ServerConfig:
    data_dir: Path = Path("freight-data")
    # Where uploads are kept (storage/choice.py): "local" files + SQLite, "memory", or
    # "s3://BUCKET[/PREFIX]" for a fleet: bytes in that bucket, everything else in the
    # PostgreSQL database ``db`` (docs/scaling.md).
    store: str = "local"
    db: str | None = None
    s3_endpoint: str | None = None
    s3_region: str = "us-east-1"
    # Bytes per S3 part (None: the least whole MiB, at least 8 MiB, that lets 10,000 parts
    # cover max_size); a chunk of the chunk API is one part.
    part_size: int | None = None
    # Where a node stages bytes before they go to S3 (None: <data_dir>/spool).
    spool_dir: Path | None = None
    # Downloads answer 302 to a presigned URL of the object store instead of passing bytes.
    download_redirect: bool = False
    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = None
    max_size: int | None = None
    fsync: FsyncPolicy = FsyncPolicy.BATCH
    sync_every: int = 64 * 1024 * 1024
    expire_after: float = 24 * 3600.0
    # An upload nobody has written a byte to goes much sooner: a creation whose answer was
    # lost, or one made only to claim space, must not hold its place for a day.
    expire_unstarted: float = 600.0
    sweep_interval: float = 60.0
    # Disk space creations leave free (what unfinished uploads still need counts as taken).
    disk_reserve: int = 64 * 1024 * 1024
    # Unfinished uploads the server holds, in all and per client address.
    max_unfinished: int = 10_000
    max_unfinished_per_client: int = 1_000
    # The share of the space free for uploads that one client's unfinished uploads may claim.
    client_space_share: float = 0.5
    # Where the server is mounted: "/" or a prefix such as "/sub/" when a reverse proxy
    # serves it under a sub-path. Every route lives under it (tus at <base>files/).
    base_path: str = "/"
    # PEM certificate chain and private key: HTTPS instead of HTTP when both are given.
    # Read again on SIGHUP (new connections get the new certificate, open ones keep theirs).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tcp_port: int | None = None  # raw TCP protocol listener (docs/protocol.md); off when None
    # Keep a running SHA-256 of every upload. Off, a file has one only when a client
    # declared the digest it expects (checked by reading the file back when it finishes).
    sha256: bool = True
    # Connection limits (docs/limits.md). A connection must send a whole request head within
    # header_timeout of being accepted; an idle keep-alive connection closes after
    # keepalive_timeout. A body, download or TCP stream that moves fewer than
    # min_rate bytes a second for idle_timeout seconds while bytes are owed is stalled and
    # closed (what was durable is kept). At most max_pending connections may wait for a
    # request head at once; past that the one waiting longest is dropped.
    header_timeout: float = 10.0
    idle_timeout: float = 30.0
    min_rate: int = 1024
    keepalive_timeout: float = 60.0
    max_pending: int = 256
    # Web origins (``https://host[:port]``, or ``*``) whose pages may use a server without a
    # token, besides its own; the only ones granted Chrome's private-network access.
    cors_origins: tuple[str, ...] = ()
    # Logging (server/logs.py): level, ``text`` or ``json`` lines, and the proxies (CIDR
    # networks) whose X-Forwarded-For names the client in the access log.
    log_level: str = "info"
    log_format: str = "text"
    trusted_proxies: tuple[str, ...] = ()

    # Hooks (docs/hooks.md): a webhook URL and/or a command; the events sent (empty: all);
    # the HMAC-SHA256 key that signs webhook bodies; how long a blocking hook (pre-*) may
    # take, and whether one that fails lets the upload through (fail open) or refuses it;
    # post-receive at most once per interval per upload; the longest wait between retries of
    # a durable event.
    hook_url: str | None = None
    hook_cmd: str | None = None
    hooks: tuple[str, ...] = ()
    hook_secret: str | None = None
    hook_timeout: float = 10.0
    hook_fail_open: bool = False
    hook_progress_interval: float = 5.0
    hook_retry_max: float = 300.0

    # How long SIGTERM may take, all in: uploads stop at their last durable point at once,
    # other requests get what is left of it, then the process exits.
    shutdown_timeout: float = 10.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "base_path", normalise_base_path(self.base_path))
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("a TLS certificate and its key go together")

    @property
    def files_path(self) -> str:
        """The tus/IETF collection and the prefix of every file URL, e.g. ``/files/``."""
        return f"{self.base_path}files/"

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


def normalise_base_path(value: str) -> str:
    """``sub``, ``/sub`` and ``/sub/`` all give ``/sub/``; ``""`` and ``/`` give ``/``.

    Only plain path segments are taken: the prefix becomes part of every route and URL.
    """
    segments = [part for part in value.strip().split("/") if part]
    for segment in segments:
        if segment in (".", "..") or not _SEGMENT.fullmatch(segment):
            raise ValueError(f"the base path {value!r} may only hold letters, digits and -._~")
    return "/" + "".join(f"{part}/" for part in segments)


MiB = 1024 * 1024
# S3's limits: at most 10,000 parts of at least 5 MiB (the last may be shorter).
MAX_PARTS = 10_000
MIN_PART_SIZE = 5 * MiB
# A fleet's part size when neither it nor the largest upload is given: 10,000 of them
# hold 156 GiB.
DEFAULT_PART_SIZE = 16 * MiB


def fleet_limits(max_size: int | None, part_size: int | None) -> tuple[int, int]:
    """A fleet's largest upload and part size: the part size given, else the least whole
    MiB (at least 8 MiB) with which 10,000 parts hold ``max_size``; the largest upload
    given, else what 10,000 parts hold. Raises ValueError if they do not fit together."""
    if part_size is None:
        if max_size is None:
            part_size = DEFAULT_PART_SIZE
        else:
            part_size = max(8 * MiB, -(-max_size // MAX_PARTS // MiB) * MiB)
            while part_size * MAX_PARTS < max_size:
                part_size += MiB
    if part_size < MIN_PART_SIZE:
        raise ValueError(f"the part size must be at least {MIN_PART_SIZE} bytes (5 MiB)")
    if max_size is None:
        max_size = part_size * MAX_PARTS
    if part_size * MAX_PARTS < max_size:
        raise ValueError(
            f"{MAX_PARTS} parts of {part_size} bytes cannot hold an upload of {max_size} bytes"
        )
    return max_size, part_size


@dataclass(frozen=True)
class StoreSpec:
    """A parsed ``--store``: ``local``, ``memory``, or ``s3`` with its bucket and prefix."""

    kind: str
    bucket: str = ""
    prefix: str = ""


_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def parse_store(value: str) -> StoreSpec:
    """``local``, ``memory`` or ``s3://BUCKET[/PREFIX]``; raises ValueError otherwise."""
    if value in ("local", "memory"):
        return StoreSpec(value)
    if not value.startswith("s3://"):
        raise ValueError(f"unknown store {value!r}: use local, memory or s3://BUCKET/PREFIX")
    bucket, _, prefix = value.removeprefix("s3://").partition("/")
    if not _BUCKET.fullmatch(bucket):
        raise ValueError(f"{bucket!r} is not an S3 bucket name")
    segments = [part for part in prefix.split("/") if part]
    for segment in segments:
        if segment in (".", "..") or not _SEGMENT.fullmatch(segment):
            raise ValueError(f"the prefix {prefix!r} may only hold letters, digits and -._~")
    return StoreSpec("s3", bucket, "".join(f"{part}/" for part in segments))
