"""How a user's usage against quota reads on one line (``freight ls``)."""

from __future__ import annotations

from freight.cli.render import human_size
from freight.client.account import Account

__all__ = ["usage_line"]


def usage_line(account: Account) -> str:
    """``alice: 1.2 GiB of 500.0 GiB, 3 of 100 files`` (no quota: just what is used)."""
    space = human_size(account.used_bytes)
    if account.byte_quota is not None:
        space += f" of {human_size(account.byte_quota)}"
    files = str(account.used_files)
    if account.file_quota is not None:
        files += f" of {account.file_quota}"
    flags = " (read-only token)" if account.read_only else ""
    return f"{account.user}: {space}, {files} files{flags}"
