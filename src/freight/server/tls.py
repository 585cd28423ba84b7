"""HTTPS: the listener's TLS context and reloading its certificate without a restart.

The listener keeps one :class:`ssl.SSLContext` for its whole life. A reload loads the new
certificate chain into that same object: OpenSSL copies the certificate into each connection
when its handshake starts, so open connections (a transfer in flight) keep theirs and every
new handshake gets the new one. The files are first loaded into a throwaway context, so a
certificate that does not match its key (or a half-written file) is refused with the old
certificate still in place, instead of leaving the live context with a mismatched pair.

Over TLS the kernel cannot move a body or a file for us: bodies come through aiohttp's
stream (``server/body.py`` and ``server/ws_receiver.py`` take only plain sockets) and
downloads through asyncio's read-and-write fallback of ``loop.sendfile``.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

__all__ = ["CertificateReloader", "load_context"]

log = logging.getLogger(__name__)


def load_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context holding ``cert`` (a PEM chain, leaf first) and its ``key``.

    Raises :class:`ssl.SSLError` or :class:`OSError` with what is wrong with the files.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


class CertificateReloader:
    """Owns the listener's context; :meth:`reload` puts new files into it (on SIGHUP)."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.cert = cert
        self.key = key
        self.context = load_context(cert, key)

    def reload(self) -> bool:
        """Load the files again for new connections; False (and one log line) if they are
        unusable, the certificate in use staying as it was."""
        try:
            load_context(self.cert, self.key)  # refuse a bad pair before touching the live one
            self.context.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as exc:
            log.error("TLS certificate not reloaded, keeping the current one: %s", exc)
            return False
        log.info("TLS certificate reloaded from %s", self.cert)
        return True
