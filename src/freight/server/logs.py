"""What the server writes to its log: one line per request, one per event, never a flood.

``--log-format text`` writes ``time level logger: message key=value ...``; ``json`` writes one
JSON object per line with the same fields, for log shippers. A traceback is written only at
``--log-level debug``; otherwise an error is one line naming the exception and where it was
raised. Every line goes to stderr; stdout keeps only the ``listening on`` lines.

The access log (logger ``freight.access``) has one line per request: the client's address,
method, path (signatures and tokens in the query masked), status, ``bytes_in`` (request
body bytes received), ``bytes_out`` (response bytes sent, head included), ``duration`` in
seconds and, where the request names one, ``upload_id``.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import sys
import traceback
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, cast
from urllib.parse import unquote_plus

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

__all__ = [
    "ACCESS_LOGGER",
    "BYTES_IN",
    "BYTES_OUT",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "TRUSTED_PROXIES",
    "AccessLogger",
    "JsonFormatter",
    "TextFormatter",
    "TrustedProxies",
    "client_address",
    "configure_logging",
    "log_fields",
    "request_client",
]

LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
ACCESS_LOGGER = "freight.access"

BYTES_IN: web.RequestKey[int] = web.RequestKey("freight.bytes_in", int)
"""Request body bytes received, set where a handler took them off the socket itself
(aiohttp's parser counts only what it parsed)."""
BYTES_OUT: web.RequestKey[int] = web.RequestKey("freight.bytes_out", int)
"""Response body bytes sent by a path aiohttp does not count (``sendfile``)."""

# Query parameters that are credentials: a signed link's signature, a token.
_SECRET_PARAMS = frozenset({"sig", "token", "access_token"})
# A forwarded address longer than any IPv6 text is not an address; it is cut, not trusted.
_MAX_HOP = 64
_RESERVED = frozenset({"time", "level", "logger", "message", "error", "error_at", "traceback"})


def log_fields(**fields: object) -> dict[str, dict[str, object]]:
    """``extra=`` for a log call whose fields the formatters print as ``key=value`` or JSON."""
    return {"fields": fields}


class TrustedProxies:
    """Networks whose ``X-Forwarded-For`` is believed; everyone else's is ignored."""

    def __init__(self, networks: Iterable[str] = ()) -> None:
        # ValueError names a network that is not one, for the option's error message.
        self._networks = [ipaddress.ip_network(n.strip(), strict=False) for n in networks]

    def __bool__(self) -> bool:
        return bool(self._networks)

    def __contains__(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        # A dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d.
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        return any(ip in net or (mapped is not None and mapped in net) for net in self._networks)


TRUSTED_PROXIES = web.AppKey("freight.trusted_proxies", TrustedProxies)


def request_client(request: web.Request) -> str:
    """The client address of ``request`` as the app's ``--trusted-proxy`` settings see it:
    what per-client limits count, so that clients behind a proxy do not share one."""
    trusted = request.app.get(TRUSTED_PROXIES)
    return client_address(request, trusted if trusted is not None else TrustedProxies())


def client_address(request: web.BaseRequest, trusted: TrustedProxies) -> str:
    """The client's address: the peer, or, behind trusted proxies, the nearest address in
    ``X-Forwarded-For`` that is not one of them (so a client cannot forge its own)."""
    peer = request.remote or "-"
    if not trusted or peer not in trusted:
        return peer
    hops = [h.strip() for h in ",".join(request.headers.getall("X-Forwarded-For", [])).split(",")]
    for hop in reversed([h for h in hops if h]):
        if hop not in trusted:
            return hop[:_MAX_HOP]
    return peer


def safe_target(request: web.BaseRequest) -> str:
    """The request target as sent (still percent-encoded), with secret query values masked."""
    url = request.rel_url
    query = url.raw_query_string
    if not query:
        return url.raw_path
    pairs = []
    for pair in query.split("&"):
        key, equals, _ = pair.partition("=")
        masked = equals and unquote_plus(key).lower() in _SECRET_PARAMS
        pairs.append(f"{key}=***" if masked else pair)
    return f"{url.raw_path}?{'&'.join(pairs)}"


def _upload_id(request: web.BaseRequest, response: web.StreamResponse) -> str | None:
    if isinstance(request, web.Request):
        named = request.match_info.get("upload_id")
        if named:
            return named
    # A creation names its new upload only in its answer.
    location = response.headers.get("Location") if response.status == 201 else None
    if location:
        return location.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0] or None
    return None


class AccessLogger(AbstractAccessLogger):
    """One line per request: client, method, path (secrets masked), status, bytes, time, id.

    aiohttp makes one per connection from the class given as ``access_log_class``;
    :meth:`trusting` makes the class that believes the given proxies.
    """

    trusted: ClassVar[TrustedProxies] = TrustedProxies()

    @classmethod
    def trusting(cls, proxies: TrustedProxies) -> type[AccessLogger]:
        return cast(type[AccessLogger], type(cls.__name__, (cls,), {"trusted": proxies}))

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        try:
            fields = self._fields(request, response, time)
        except Exception as exc:  # a log line must never fail the request it describes
            logging.getLogger(__name__).warning("no access log line: %r", exc)
            return
        self.logger.info("request", extra={"fields": fields})

    def _fields(
        self, request: web.BaseRequest, response: web.StreamResponse, time: float
    ) -> dict[str, object]:
        bytes_in = request.get(BYTES_IN)
        if bytes_in is None:
            bytes_in = request.content.total_bytes
        fields: dict[str, object] = {
            "client": client_address(request, self.trusted),
            "method": request.method,
            "path": safe_target(request),
            "status": response.status,
            "bytes_in": bytes_in,
            "bytes_out": response.body_length + request.get(BYTES_OUT, 0),
            "duration": round(time, 6),
        }
        upload_id = _upload_id(request, response)
        if upload_id:
            fields["upload_id"] = upload_id
        return fields


def _fields(record: logging.LogRecord) -> Mapping[str, object]:
    fields = getattr(record, "fields", None)
    return fields if isinstance(fields, Mapping) else {}


def _error(record: logging.LogRecord) -> tuple[str, str | None] | None:
    """``("Type: message", "file.py:line in function")`` of the record's exception."""
    if not record.exc_info or record.exc_info[1] is None:
        return None
    error = record.exc_info[1]
    frames = traceback.extract_tb(error.__traceback__)
    where = None
    if frames:
        last = frames[-1]
        where = f"{Path(last.filename).name}:{last.lineno} in {last.name}"
    return f"{type(error).__name__}: {error}", where


def _traceback(record: logging.LogRecord) -> str | None:
    if not record.exc_info:
        return None
    return logging.Formatter().formatException(record.exc_info)


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _escape_breaks(text: str) -> str:
    """A message may quote what a client sent: it must not start a forged log line."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _one_line(value: object) -> str:
    text = str(value)
    if not text or any(c in text for c in ' "=\\') or not text.isprintable():
        return json.dumps(text)
    return text


class TextFormatter(logging.Formatter):
    """``time level logger: message key=value ...``, one line unless ``tracebacks``."""

    def __init__(self, tracebacks: bool) -> None:
        super().__init__()
        self.tracebacks = tracebacks

    def format(self, record: logging.LogRecord) -> str:
        message = _escape_breaks(record.getMessage())
        parts = [f"{_timestamp(record)} {record.levelname} {record.name}: {message}"]
        parts += [f"{key}={_one_line(value)}" for key, value in _fields(record).items()]
        error = _error(record)
        if error is not None:
            parts.append(f"error={_one_line(error[0])}")
            if error[1] is not None:
                parts.append(f"error_at={_one_line(error[1])}")
        line = " ".join(parts)
        trace = _traceback(record) if self.tracebacks else None
        return f"{line}\n{trace}" if trace else line


class JsonFormatter(logging.Formatter):
    """One JSON object per line; a traceback (debug only) is a field, still one line."""

    def __init__(self, tracebacks: bool) -> None:
        super().__init__()
        self.tracebacks = tracebacks

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in _fields(record).items():
            entry[f"field_{key}" if key in _RESERVED else key] = value
        error = _error(record)
        if error is not None:
            entry["error"], entry["error_at"] = error
            if self.tracebacks:
                entry["traceback"] = _traceback(record)
        return json.dumps(entry, default=str)


def configure_logging(level: str = "info", fmt: str = "text") -> None:
    """Route every logger (freight's, aiohttp's, asyncio's, warnings) through one formatter
    on stderr."""
    if level.lower() not in LOG_LEVELS:
        raise ValueError(f"unknown log level {level!r} (one of {', '.join(LOG_LEVELS)})")
    if fmt not in LOG_FORMATS:
        raise ValueError(f"unknown log format {fmt!r} (one of {', '.join(LOG_FORMATS)})")
    numeric = logging.getLevelName(level.upper())
    tracebacks = numeric <= logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(tracebacks) if fmt == "json" else TextFormatter(tracebacks))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    logging.captureWarnings(True)
