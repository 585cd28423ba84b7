"""``GET /metrics``: Prometheus text exposition of what the server is doing.

Each application owns its :class:`~prometheus_client.CollectorRegistry` (never the global
default), so several apps in one process (the tests start many) keep separate counts.

Where the numbers come from:

* ``freight_bytes_written_total``: the engine's own counter, read at scrape time, so every
  protocol's bytes count and the hot write path pays nothing extra.
* ``freight_uploads_{created,finished,deleted}_total``: counted by a background task that
  follows the engine's event stream. The hub drops a slow subscriber's oldest events, but
  this one only increments integers, so it keeps up unless the loop stalls for hundreds of
  events.
* ``freight_chunk_requests_total{outcome}`` and ``freight_chunk_body_bytes_total``: counted
  by the chunk API's handlers (:mod:`freight.server.chunks`).
* ``freight_uploads_in_progress``: sessions still receiving, counted when scraped.

Like every endpoint except ``/health``, ``/metrics`` needs the bearer token when one is set.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest

from freight.core import UploadEngine
from freight.core.events import EventHub, UploadEventKind
from freight.server.state import ENGINE

__all__ = ["METRICS", "ServerMetrics", "add_metrics"]


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
        yield GaugeMetricFamily(
            "freight_event_subscribers",
            "Subscribers to the engine's live events (SSE streams and internal consumers).",
            value=self._engine.events.subscriber_count,
        )


class ServerMetrics:
    """The metrics of one application, in its own registry."""

    def __init__(self, engine: UploadEngine) -> None:
        self.registry = CollectorRegistry()
        self.uploads_created = Counter(
            "freight_uploads_created", "Uploads created (all protocols).", registry=self.registry
        )
        self.uploads_finished = Counter(
            "freight_uploads_finished", "Uploads turned into files.", registry=self.registry
        )
        self.uploads_deleted = Counter(
            "freight_uploads_deleted",
            "Uploads and files deleted, aborted or expired.",
            registry=self.registry,
        )
        self.chunk_requests = Counter(
            "freight_chunk_requests",
            "PUT /api/uploads/{id}/chunks/{n} requests by outcome (stored, duplicate, rejected).",
            ["outcome"],
            registry=self.registry,
        )
        self.chunk_body_bytes = Counter(
            "freight_chunk_body_bytes",
            "Chunk body bytes received, duplicates and rejected chunks included.",
            registry=self.registry,
        )
        self.uploads_in_progress = Gauge(
            "freight_uploads_in_progress",
            "Uploads still receiving bytes (all protocols).",
            registry=self.registry,
        )
        self.registry.register(_EngineCollector(engine))

    async def follow(self, hub: EventHub) -> None:
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


async def metrics_endpoint(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    metrics.uploads_in_progress.set(await request.app[ENGINE].unfinished_count())
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
