"""Server settings: one frozen value built by the CLI and read by every layer."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

__all__ = ["FsyncPolicy", "ServerConfig"]


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
    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = None
    max_size: int | None = None
    fsync: FsyncPolicy = FsyncPolicy.BATCH
    sync_every: int = 64 * 1024 * 1024
    expire_after: float = 24 * 3600.0
    sweep_interval: float = 60.0
    disk_reserve: int = 64 * 1024 * 1024
    base_path: str = "/files/"
    tcp_port: int | None = None  # raw TCP protocol listener (docs/protocol.md); off when None
    # Keep a running SHA-256 of every upload. Off, a file has one only when a client
    # declared the digest it expects (checked by reading the file back when it finishes).
    sha256: bool = True
    # Web origins (``https://host[:port]``, or ``*``) whose pages may use a server without a
    # token, besides its own; the only ones granted Chrome's private-network access.
    cors_origins: tuple[str, ...] = ()
