"""``GET /metrics``: Prometheus text exposition of what the server is doing.

Each application owns its :class:`~prometheus_client.CollectorRegistry` (never the global
default), so several apps in one process (the tests start many) keep separate counts.

Where the numbers come from:

* ``freight_http_requests_total{route,method,status}`` and
  ``freight_http_request_duration_seconds{route,method,status}``: the outermost middleware
  (:func:`metrics_middleware`). ``route`` is the matched route's canonical path
  (``/files/{upload_id}``), never the raw path, and ``method`` one of the methods freight
  serves or ``OTHER``: label values a client could choose freely would grow the registry
  without bound. A request the server answered with nothing (its client left, or a
  shutdown cut it off) counts with status ``none``. The duration is the handler's: for an
  upload, until its body is in; for a download, until the answer starts; for WebSocket
  and event streams, the whole connection.
* ``freight_bytes_received_total{protocol}`` (``tus``, ``ietf``, ``chunks``, ``ws``,
  ``tcp``) and ``freight_bytes_sent_total{protocol}`` (``download``, ``tcp``): counted as
  bodies arrive (:func:`body_counter`), per WebSocket credit and TCP ACK window, and per
  file sent.
* ``freight_bytes_written_total``: the engine's own counter, read at scrape time.
* ``freight_hash_read_back_bytes_total`` (bytes the running SHA-256 read from finished blobs
  at finish) and ``freight_hash_held_bytes_total`` (out-of-order bytes it hashed from what
  the store held of them): the engine's, read at scrape time.
* ``freight_uploads_{created,finished,deleted}_total``: counted by a background task that
  follows the engine's event stream (it only increments integers, so it keeps up).
* ``freight_chunk_requests_total{outcome}`` and ``freight_chunk_body_bytes_total``: counted
  by the chunk API's handlers (:mod:`freight.server.chunks`).
* ``freight_unfinished_uploads{state}``: ``active`` uploads have a writer open now,
  ``idle`` ones wait for their client (or were abandoned and wait to expire);
  ``freight_uploads_in_progress`` is their sum, as before. Read when scraped.
* ``freight_disk_free_bytes`` and ``freight_disk_reserve_bytes``: the data directory's
  filesystem, read when scraped; creations stop when the first nears the second.
* ``freight_hook_deliveries_total{event,target}``, ``freight_hook_failures_total{event,
  target}``, ``freight_hook_dropped_total{event}`` and
  ``freight_hook_duration_seconds{event}``: counted by the hook dispatcher
  (:mod:`freight.server.hooks`) per delivery; ``freight_hook_outbox_depth``: durable hook
  events not delivered yet, read when scraped.
* ``process_*``: prometheus_client's process collector (CPU, memory, descriptors).

Like every endpoint except ``/health`` and ``/ready``, ``/metrics`` needs the bearer token
when one is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest

from freight.core import UploadEngine
from freight.core.events import UploadEventKind
from freight.core.ports import EventBus
from freight.server.errors import PROTOCOL_KEY
from freight.server.hooks import HOOKS
from freight.server.state import ENGINE, SETTINGS

__all__ = [
    "METRICS",
    "ServerMetrics",
    "add_metrics",
    "body_counter",
    "metrics_middleware",
    "received_counter",
    "sent_counter",
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# From a health check to a large body read at disk speed.
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class _EngineCollector:
    """Reads the engine's counters when Prometheus scrapes, not on every write."""

    def __init__(self, engine: UploadEngine) -> None:
        self._engine = engine

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "freight_bytes_written",
            "Upload bytes written to storage since start-up (all protocols).",
            value=self._engine.bytes_written_total,
        )
        hashing = self._engine.hash_follower
        yield CounterMetricFamily(
            "freight_hash_read_back_bytes",
            "Bytes the running SHA-256 read back from finished blobs at finish.",
            value=hashing.settled_bytes,
        )
        yield CounterMetricFamily(
            "freight_hash_followed_bytes",
            "Bytes the running SHA-256 read back from the page cache while receiving "
            "(those no writer hashed as they passed: spliced, or out of order).",
            value=hashing.followed_bytes,
        )
        yield CounterMetricFamily(
            "freight_hash_held_bytes",
            "Bytes that arrived out of order, hashed from what the store held of them.",
            value=hashing.held.hashed_bytes if hashing.held is not None else 0,
        )
        yield GaugeMetricFamily(
            "freight_event_subscribers",
            "Subscribers to the engine's live events (SSE streams and internal consumers).",
            value=self._engine.events.subscriber_count,
        )


class ServerMetrics:
    """The metrics of one application, in its own registry."""

    def __init__(self, engine: UploadEngine) -> None:
        self.registry = registry = CollectorRegistry()
        self.uploads_created = Counter(
            "freight_uploads_created", "Uploads created (all protocols).", registry=registry
        )
        self.uploads_finished = Counter(
            "freight_uploads_finished", "Uploads turned into files.", registry=registry
        )
        self.uploads_deleted = Counter(
            "freight_uploads_deleted",
            "Uploads and files deleted, aborted or expired.",
            registry=registry,
        )
        self.chunk_requests = Counter(
            "freight_chunk_requests",
            "PUT /api/uploads/{id}/chunks/{n} requests by outcome (stored, duplicate, rejected).",
            ["outcome"],
            registry=registry,
        )
        self.chunk_body_bytes = Counter(
            "freight_chunk_body_bytes",
            "Chunk body bytes received, duplicates and rejected chunks included.",
            registry=registry,
        )
        self.uploads_in_progress = Gauge(
            "freight_uploads_in_progress",
            "Unfinished uploads, active or idle (freight_unfinished_uploads splits them).",
            registry=registry,
        )
        self.unfinished = Gauge(
            "freight_unfinished_uploads",
            "Unfinished uploads: active (a writer is open) or idle (nobody writing).",
            ["state"],
            registry=registry,
        )
        self.requests = Counter(
            "freight_http_requests",
            "HTTP requests by route (canonical path), method and status.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.request_duration = Histogram(
            "freight_http_request_duration_seconds",
            "Time in the handler by route, method and status (see the module docs).",
            ["route", "method", "status"],
            buckets=_DURATION_BUCKETS,
            registry=registry,
        )
        self.bytes_received = Counter(
            "freight_bytes_received",
            "Upload bytes received by protocol (tus, ietf, chunks, ws, tcp).",
            ["protocol"],
            registry=registry,
        )
        self.bytes_sent = Counter(
            "freight_bytes_sent",
            "File bytes sent by protocol (download, tcp).",
            ["protocol"],
            registry=registry,
        )
        self.disk_free = Gauge(
            "freight_disk_free_bytes",
            "Free bytes on the data directory's filesystem.",
            registry=registry,
        )
        self.disk_reserve = Gauge(
            "freight_disk_reserve_bytes",
            "Free bytes new uploads leave (--disk-reserve).",
            registry=registry,
        )
        self.hook_deliveries = Counter(
            "freight_hook_deliveries",
            "Hook events a target took, by event and target (webhook, command).",
            ["event", "target"],
            registry=registry,
        )
        self.hook_failures = Counter(
            "freight_hook_failures",
            "Hook deliveries that failed (no answer, an error status; retried if durable).",
            ["event", "target"],
            registry=registry,
        )
        self.hook_dropped_events = Counter(
            "freight_hook_dropped",
            "Best-effort hook events (post-create, post-receive) dropped: the queue was full.",
            ["event"],
            registry=registry,
        )
        self.hook_duration = Histogram(
            "freight_hook_duration_seconds",
            "Time one hook delivery took, by event.",
            ["event"],
            buckets=_DURATION_BUCKETS,
            registry=registry,
        )
        self.hook_outbox_depth = Gauge(
            "freight_hook_outbox_depth",
            "Durable hook events (post-finish, post-terminate, post-expire) not delivered yet.",
            registry=registry,
        )
        registry.register(_EngineCollector(engine))
        ProcessCollector(registry=registry)

    def received(self, protocol: str) -> Callable[[float], None]:
        """What counts ``protocol``'s received bytes (bound once, called per read)."""
        return self.bytes_received.labels(protocol).inc

    def sent(self, protocol: str) -> Callable[[float], None]:
        return self.bytes_sent.labels(protocol).inc

    def hook_sent(self, event: str, target: str, ok: bool, seconds: float) -> None:
        """One hook delivery (called by :class:`~freight.server.hooks.HookDispatcher`)."""
        (self.hook_deliveries if ok else self.hook_failures).labels(event, target).inc()
        self.hook_duration.labels(event).observe(seconds)

    def hook_dropped(self, event: str) -> None:
        self.hook_dropped_events.labels(event).inc()

    async def follow(self, hub: EventBus) -> None:
        """Count uploads appearing, finishing and going away, until cancelled."""
        counters = {
            UploadEventKind.CREATED: self.uploads_created,
            UploadEventKind.FINISHED: self.uploads_finished,
            UploadEventKind.DELETED: self.uploads_deleted,
        }
        with hub.subscribe() as queue:
            while True:
                event = await queue.get()
                counter = counters.get(event.kind)
                if counter is not None:
                    counter.inc()


METRICS = web.AppKey("freight.metrics", ServerMetrics)


def received_counter(app: web.Application, protocol: str) -> Callable[[float], None]:
    """Counts bytes received over ``protocol`` (a no-op in an app without metrics)."""
    metrics = app.get(METRICS)
    return metrics.received(protocol) if metrics is not None else _ignore


def sent_counter(app: web.Application, protocol: str) -> Callable[[float], None]:
    metrics = app.get(METRICS)
    return metrics.sent(protocol) if metrics is not None else _ignore


def body_counter(request: web.Request) -> Callable[[float], None]:
    """Counts an upload body's bytes under the request's protocol (tus, ietf or chunks)."""
    protocol = request.get(PROTOCOL_KEY, "tus")
    return received_counter(request.app, protocol if isinstance(protocol, str) else protocol[0])


def _ignore(nbytes: float) -> None:
    return None


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Counts and times every request by route, method and status (outermost)."""
    started = time.perf_counter()
    status = "none"
    try:
        response = await handler(request)
        status = str(response.status)
        return response
    except web.HTTPException as exc:
        status = str(exc.status)
        raise
    finally:
        metrics = request.app.get(METRICS)
        if metrics is not None:
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else "unmatched"
            method = request.method if request.method in _METHODS else "OTHER"
            metrics.requests.labels(route, method, status).inc()
            elapsed = time.perf_counter() - started
            metrics.request_duration.labels(route, method, status).observe(elapsed)


async def metrics_endpoint(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    engine = request.app[ENGINE]
    unfinished = await engine.unfinished_count()
    active = min(engine.uploads_being_written, unfinished)
    metrics.uploads_in_progress.set(unfinished)
    metrics.unfinished.labels("active").set(active)
    metrics.unfinished.labels("idle").set(unfinished - active)
    free = await engine.blobs.free_bytes()
    if free is not None:
        metrics.disk_free.set(free)
    metrics.disk_reserve.set(request.app[SETTINGS].disk_reserve)
    hooks = request.app.get(HOOKS)
    if hooks is not None and hooks.outbox_store is not None:
        metrics.hook_outbox_depth.set(await hooks.outbox_store.outbox_depth())
    # CONTENT_TYPE_LATEST carries a charset, which aiohttp only accepts as a raw header.
    return web.Response(
        body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


async def _follow_events(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.ensure_future(app[METRICS].follow(app[ENGINE].events))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def add_metrics(app: web.Application) -> None:
    """Give ``app`` its own registry, the ``/metrics`` route and the event counter task."""
    app[METRICS] = ServerMetrics(app[ENGINE])
    app.router.add_get("/metrics", metrics_endpoint)
    app.cleanup_ctx.append(_follow_events)
