"""Sending and fetching files over freight's raw TCP protocol (docs/protocol.md).

Uploads: ``PUT`` (or ``RESUME`` of the id remembered in the
:class:`~freight.client.resume_store.ResumeStore`), then DATA frames whose payload goes from
the file to the socket with ``sendfile`` (never through Python), at most two windows past the
server's last ``ACK``. A worker thread hashes the file from disk meanwhile, for ``DONE``.
After any failure the next attempt asks the server where its durable copy ends and goes on
from there.

Downloads: a part file (:mod:`freight.client.partfile`, as for HTTP) plus ``GET`` from
its size. A zero-length ``GET`` first asks which
file the server has (size, SHA-256, name); if that is not the file the ``.part`` was started
from, the ``.part`` starts over, so two versions are never spliced. Payload is read by the
kernel straight into three reused 4 MiB buffers in turn: while one fills, the one before is
written (``pwrite``) in a worker thread and the one before that is hashed in another, so
receiving, writing and hashing overlap. The SHA-256 must match the server's before the file
gets its name.
"""

from __future__ import annotations

from freight.client.tcp_download import download_tcp
from freight.client.tcp_link import TcpAddress, TcpServerError, parse_tcp_url
from freight.client.tcp_upload import upload_tcp

__all__ = ["TcpAddress", "TcpServerError", "download_tcp", "parse_tcp_url", "upload_tcp"]
