"""Sans-IO codecs: header values in, plain values or :mod:`freight.errors` out.

Nothing in this package touches a socket or a file, so every parser is tested and fuzzed
without a server. Import the module you need:

- :mod:`~freight.protocol.tus` - tus 1.0.0 headers (version, offsets, creation, concatenation,
  ``Upload-Checksum``, HTTP dates, OPTIONS discovery, the CORS header list).
- :mod:`~freight.protocol.metadata` - ``Upload-Metadata``, safe file names,
  ``Content-Disposition``.
- :mod:`~freight.protocol.checksum` - hashers for the tus checksum extension.
- :mod:`~freight.protocol.ranges` - ``Range``, ``If-Range`` and entity-tag matching.
- :mod:`~freight.protocol.digests` - RFC 9530 ``Repr-Digest`` / ``Content-Digest``.
- :mod:`~freight.protocol.ietf` - IETF resumable uploads draft headers.
- :mod:`~freight.protocol.ws_messages` - WebSocket upload control messages, credit, origins.
- :mod:`~freight.protocol.frames` - the raw TCP protocol's frames and incremental decoder.

The last three are facades over modules split by concern (``ietf_*``, ``ws_*``, ``frame_*``);
their names stay importable from the facade.

Parsers raise only :class:`freight.errors.FreightError` subclasses for bad input, with messages
that name the header; the transport maps them to responses.
"""

__all__: list[str] = []
