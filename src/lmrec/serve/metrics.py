"""Prometheus metrics of the service: requests by route and status, latency histograms, events by outcome,
the served model version, online feedback per version (HR@k, NDCG@10, coverage); requests are recorded by a
plain ASGI middleware (a few microseconds per request).

Each app owns its own collector registry, so several apps (tests, workers) never share counters; with
`--workers N` every scrape sees the worker that answered it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

if TYPE_CHECKING:
    from lmrec.serve.live import LiveHistories

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The service's collectors, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "lmrec_http_requests", "HTTP requests answered", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "lmrec_http_request_duration_seconds",
            "Time from receiving a request to the end of its reply",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.events = Counter("lmrec_events", "Posted events by outcome", ["outcome"], registry=self.registry)
        self.fallbacks = Counter(
            "lmrec_popularity_fallbacks", "Recommendations answered by popularity (no usable history)",
            registry=self.registry,
        )  # fmt: skip
        self.model = Gauge("lmrec_model_info", "The served model version (value 1)", ["version", "model"],
                           registry=self.registry)  # fmt: skip
        self.loaded_at = Gauge("lmrec_model_loaded_timestamp_seconds", "When the served version was swapped in",
                               registry=self.registry)  # fmt: skip
        self.refused = Gauge("lmrec_model_refused", "1 while the version the source asks for is refused (see /readyz)",
                             registry=self.registry)  # fmt: skip
        self.replies = Counter(
            "lmrec_recommendation_replies", "Recommendation replies, computed or answered from the user's memo "
            "(a user's reply changes only when one of their events arrives)", ["source"], registry=self.registry,
        )  # fmt: skip
        self.histories = Gauge("lmrec_live_histories", "Users whose live history is cached", registry=self.registry)
        self._online()

    def _online(self) -> None:
        """The online feedback collectors (see lmrec.serve.feedback): HR@k = hits / resolved per version."""
        self.online_served = Counter(
            "lmrec_online_recommendations_served", "User recommendation lists tracked for online feedback",
            ["version"], registry=self.registry,
        )  # fmt: skip
        self.online_resolved = Counter(
            "lmrec_online_recommendations_resolved", "Tracked lists resolved as a hit or a miss", ["version"],
            registry=self.registry,
        )  # fmt: skip
        self.online_dropped = Counter(
            "lmrec_online_recommendations_dropped",
            "Tracked lists dropped unresolved (memory bounds, erased users)", ["version"], registry=self.registry,
        )  # fmt: skip
        self.online_hits = Counter(
            "lmrec_online_hits", "Resolved lists whose hit was within their top k", ["version", "k"],
            registry=self.registry,
        )  # fmt: skip
        self.online_gain = Counter(
            "lmrec_online_ndcg_gain", "Sum of NDCG@k over resolved lists (NDCG@k = this / resolved)",
            ["version", "k"], registry=self.registry,
        )  # fmt: skip
        self.online_coverage = Gauge(
            "lmrec_online_coverage", "Distinct items in served top-k lists over the catalogue size",
            ["version", "k"], registry=self.registry,
        )  # fmt: skip
        self.feedback_log_dropped = Counter(
            "lmrec_feedback_log_dropped", "Feedback log records not written (buffer full or write failed)",
            registry=self.registry,
        )  # fmt: skip

    def set_model(self, version: str, model: str) -> None:
        """Record the version now served (the previous one's series is removed)."""
        self.model.clear()
        self.model.labels(version, model).set(1)
        self.loaded_at.set(time.time())

    def watch_histories(self, histories: LiveHistories) -> None:
        """Report the live-history cache size at each scrape."""
        self.histories.set_function(lambda: len(histories))

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts and times every HTTP request by its route template (unmatched paths share one label)."""

    def __init__(self, app, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - started)
