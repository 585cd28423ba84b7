"""A fleet on one machine: a real PostgreSQL, a real SeaweedFS, and ``freight serve``
processes on their own 127.0.0.1 ports, all started with the same store options."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import ServerProcess
from tests.s3.seaweed import Seaweed

__all__ = ["Fleet", "fleet"]

MiB = 1024 * 1024
# The smallest part S3 takes: uploads of a few MiB cross several parts.
PART_SIZE = 5 * MiB


@dataclass
class Fleet:
    """Nodes started on demand; every one sees the same bucket and database."""

    root: Path
    bucket: str
    dsn: str
    seaweed: Seaweed
    factory: type[ServerProcess]
    nodes: list[ServerProcess] = field(default_factory=list)

    def store_args(self) -> list[str]:
        return [
            "--store",
            f"s3://{self.bucket}/fleet",
            "--s3-endpoint",
            self.seaweed.endpoint,
            "--db",
            self.dsn,
            "--part-size",
            str(PART_SIZE),
        ]

    def start_node(self, *args: str) -> ServerProcess:
        number = len(self.nodes)
        node = self.factory(
            data_dir=self.root / f"node-{number}",
            args=[*self.store_args(), "--spool-dir", str(self.root / f"spool-{number}"), *args],
        )
        node.start(timeout=40)
        self.nodes.append(node)
        return node


@pytest.fixture
def fleet(
    tmp_path: Path,
    server_factory: type[ServerProcess],
    seaweed: Seaweed,
    s3_bucket: str,
    pg_dsn: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Fleet]:
    # The usual variables: a node finds its S3 credentials as any AWS tool would.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweed.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweed.secret_key)
    yield Fleet(tmp_path, s3_bucket, pg_dsn, seaweed, server_factory)
