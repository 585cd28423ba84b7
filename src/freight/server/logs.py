"""What the server writes to its log: one line per request, one per event, never a flood.

``--log-format text`` writes ``time level logger: message key=value ...``; ``json`` writes one
JSON object per line with the same fields, for log shippers. A traceback is written only at
``--log-level debug``; otherwise an error is one line naming the exception.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import sys
import time
from collections.abc import Iterable, Mapping
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

__all__ = [
    "BYTES_IN",
    "BYTES_OUT",
    "LOG_FORMATS",
    "AccessLogger",
    "TrustedProxies",
    "client_address",
    "configure_logging",
    "log_fields",
]

LOG_FORMATS = ("text", "json")
ACCESS_LOGGER = "freight.access"

BYTES_IN: web.RequestKey[int] = web.RequestKey("freight.bytes_in")
"""Body bytes a handler took off the socket itself (aiohttp's parser never saw them)."""
BYTES_OUT: web.RequestKey[int] = web.RequestKey("freight.bytes_out")
"""Body bytes sent by a path aiohttp does not count (``sendfile``)."""

# Query parameters that are credentials: a signed link's signature.
_SECRET_PARAMS = frozenset({"sig", "token", "access_token"})


def log_fields(**fields: object) -> dict[str, dict[str, object]]:
    """``extra=`` for a log call whose fields the formatters print as ``key=value`` or JSON."""
    return {"extra": {"fields": fields}}


class TrustedProxies:
    """Addresses whose ``X-Forwarded-For`` is believed; everyone else's is ignored."""

    def __init__(self, networks: Iterable[str] = ()) -> None:
        self._networks = [ipaddress.ip_network(n, strict=False) for n in networks]

    def __contains__(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._networks)


def client_address(request: web.BaseRequest, trusted: TrustedProxies) -> str:
    """The client's address: the peer, or, behind trusted proxies, the nearest address in
    ``X-Forwarded-For`` that is not one of them (so a client cannot forge its own)."""
    peer = request.remote or "-"
    if peer not in trusted:
        return peer
    hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",")]
    for hop in reversed([h for h in hops if h]):
        if hop not in trusted:
            return hop[:64]
    return peer


def _safe_target(request: web.BaseRequest) -> str:
    if not request.query_string:
        return request.path
    pairs = [
        f"{key}={'***' if key in _SECRET_PARAMS else value}" for key, value in request.query.items()
    ]
    return f"{request.path}?{'&'.join(pairs)}"


class AccessLogger(AbstractAccessLogger):
    """One line per request: method, path (secrets masked), status, bytes, duration, id."""

    trusted = TrustedProxies()

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        upload_id = (
            request.match_info.get("upload_id") if isinstance(request, web.Request) else None
        )
        fields: dict[str, object] = {
            "client": client_address(request, self.trusted),
            "method": request.method,
            "path": _safe_target(request),
            "status": response.status,
            "bytes_in": request.get(BYTES_IN, request.content_length or 0),
            "bytes_out": max(response.body_length, request.get(BYTES_OUT, 0)),
            "duration": round(time, 6),
        }
        if upload_id:
            fields["upload_id"] = upload_id
        self.logger.info("request", extra={"fields": fields})


def _fields(record: logging.LogRecord) -> Mapping[str, object]:
    fields = getattr(record, "fields", None)
    return fields if isinstance(fields, Mapping) else {}


def _error_text(record: logging.LogRecord, with_traceback: bool) -> str | None:
    if not record.exc_info or record.exc_info[1] is None:
        return None
    if with_traceback:
        return logging.Formatter().formatException(record.exc_info)
    error = record.exc_info[1]
    return f"{type(error).__name__}: {error}"


def _escape_breaks(text: str) -> str:
    """A message may quote what a client sent: it must not start a forged log line."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _one_line(value: object) -> str:
    text = str(value)
    if any(c in text for c in ' "=\n\r\t') or not text:
        return json.dumps(text)
    return text


class TextFormatter(logging.Formatter):
    def __init__(self, tracebacks: bool) -> None:
        super().__init__()
        self.tracebacks = tracebacks

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        message = _escape_breaks(record.getMessage())
        line = f"{stamp}Z {record.levelname} {record.name}: {message}"
        pairs = " ".join(f"{key}={_one_line(value)}" for key, value in _fields(record).items())
        if pairs:
            line = f"{line} {pairs}"
        error = _error_text(record, self.tracebacks)
        if error is not None:
            line = f"{line}\n{error}" if self.tracebacks else f"{line} error={_one_line(error)}"
        return line


class JsonFormatter(logging.Formatter):
    def __init__(self, tracebacks: bool) -> None:
        super().__init__()
        self.tracebacks = tracebacks

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_fields(record))
        error = _error_text(record, self.tracebacks)
        if error is not None:
            entry["error"] = error
        return json.dumps(entry, default=str)


def configure_logging(level: str = "info", fmt: str = "text") -> None:
    """Route every logger (freight's, aiohttp's, asyncio's) through one formatter on stderr."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    tracebacks = numeric <= logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(tracebacks) if fmt == "json" else TextFormatter(tracebacks))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
