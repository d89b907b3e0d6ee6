"""Prometheus metrics of the server (seconds as the unit, ``_total`` counters, few labels).

Each app gets its own :class:`Metrics` with its own registry, so two apps in one process (tests)
never share or collide on counters. With several worker processes the values live in shared
files and /metrics sums the workers: ``serving.multiprocess.WorkerMetrics`` (lessons/05).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

# 0.5 ms .. 10 s: the model answers in about a millisecond, timeouts are seconds.
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
QUEUE_WAIT_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
REJECTION_REASONS = ("queue_full", "timeout", "not_ready")


class Metrics:
    """All metrics of one app, registered in ``self.registry``."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "http_requests", "HTTP requests answered.", ["method", "route", "status"], registry=r
        )
        self.request_duration = Histogram(
            "http_request_duration_seconds",
            "Time from request received to response sent.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        # multiprocess_mode: how several workers combine (ignored in one process).
        self.in_progress = Gauge(
            "http_requests_in_progress",
            "HTTP requests being handled now.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.batch_size = Histogram(
            "inference_batch_size", "Texts per model call.", buckets=BATCH_SIZE_BUCKETS, registry=r
        )
        self.queue_wait = Histogram(
            "inference_queue_wait_seconds",
            "Time a text waited in the queue before its batch ran.",
            buckets=QUEUE_WAIT_BUCKETS,
            registry=r,
        )
        self.batch_duration = Histogram(
            "inference_batch_duration_seconds",
            "Time of one model call.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "inference_queue_depth",
            "Texts waiting for the model.",
            registry=r,
            multiprocess_mode="livesum",
        )
        # Counted where they happen (not read at scrape time): right with several workers too.
        self.dropped_texts = Counter(
            "inference_dropped_texts",
            "Texts dropped before the model: their callers had timed out or gone away.",
            registry=r,
        )
        self.log_lines_lost = Counter(
            "inference_log_lines_lost",
            "Log lines that could not be written (disk full, file gone).",
            registry=r,
        )
        self.predictions = Counter(
            "inference_predictions", "Texts classified, by label.", ["label"], registry=r
        )
        self.rejections = Counter(
            "inference_rejections",
            "Requests refused before or while waiting for the model.",
            ["reason"],
            registry=r,
        )
        self.model_info = Gauge(  # one series whatever the number of workers
            "model_info",
            "The loaded model (value 1).",
            ["version", "sklearn_version"],
            registry=r,
            multiprocess_mode="max",
        )
        for reason in REJECTION_REASONS:  # export zeros, so rate() works from the start
            self.rejections.labels(reason)
        self._children: dict[tuple, Any] = {}

    def set_model(self, version: str, sklearn_version: str) -> None:
        """Record which model is loaded."""
        self.model_info.clear()
        self.model_info.labels(version, sklearn_version).set(1)

    def observe_batch(self, size: int, duration: float, queue_waits: Iterable[float] = ()) -> None:
        """Record one model call."""
        self.batch_size.observe(size)
        self.batch_duration.observe(duration)
        for wait in queue_waits:
            self.queue_wait.observe(wait)

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, bound once: ``.labels()`` takes a lock and builds a tuple
        on every call. Bounded by the label values the app uses (few, by design)."""
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def observe_request(self, method: str, route: str, status: str, seconds: float) -> None:
        """Count one answered request and time it (the middleware, once per request)."""
        self.child(self.requests, method, route, status).inc()
        self.child(self.request_duration, method, route).observe(seconds)

    def count_labels(self, labels: Iterable[str]) -> None:
        """Count returned predictions by label."""
        for label in labels:
            self.child(self.predictions, label).inc()

    def response(self) -> Response:
        """The registry in Prometheus text format, for GET /metrics."""
        return self.scrape(self.registry)

    @staticmethod
    def scrape(registry: CollectorRegistry) -> Response:
        """``registry`` in Prometheus text format."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
