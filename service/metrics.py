"""Prometheus metrics (prometheus-client), one registry per app.

HTTP requests are counted and timed (`HttpMetrics.observe`, called by the edge middleware)
labelled with the route template, never the raw path, so ids do not explode the label
set. Everything else is read at scrape time from the objects that already keep it: the
Novita client's status, the inbox writer's counters, the workers' counters, and a few
counts from the database that the `/metrics` handler refreshes before rendering.

One process per metrics endpoint: `serve` runs one uvicorn worker; run several processes
behind a load balancer and scrape each (or each `worker` process's own port, if exposed).
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}


class HttpMetrics(Collector):
    """Requests answered and their latency, by route template, method (and status).

    Counted in plain dictionaries and handed to prometheus-client at scrape time as metric
    families: its own Counter and Histogram take a lock and check their state on every
    call, a measurable share of the busiest endpoints, while everything here runs on the
    event loop's one thread (requests and scrapes alike), which needs no lock.
    """

    BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

    def __init__(self, registry: CollectorRegistry) -> None:
        self._requests: dict[tuple[str, str, int], int] = {}
        # Per (route, method): a count per bucket (the last one is +Inf), then the sum.
        self._latency: dict[tuple[str, str], list[float]] = {}
        registry.register(self)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request and record how long it took."""
        key = (route, method, status)
        self._requests[key] = self._requests.get(key, 0) + 1
        histogram = self._latency.get((route, method))
        if histogram is None:
            histogram = self._latency[(route, method)] = [0.0] * (len(self.BUCKETS) + 2)
        histogram[bisect_left(self.BUCKETS, seconds)] += 1
        histogram[-1] += seconds

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "http_requests", "HTTP requests answered.", labels=["route", "method", "status"]
        )
        for (route, method, status), count in self._requests.items():
            requests.add_metric([route, method, str(status)], count)
        yield requests
        latency = HistogramMetricFamily(
            "http_request_duration_seconds",
            "Time to answer an HTTP request.",
            labels=["route", "method"],
        )
        bounds = [*(str(float(bound)) for bound in self.BUCKETS), "+Inf"]
        for (route, method), histogram in self._latency.items():
            cumulative = list(accumulate(histogram[:-1]))
            latency.add_metric(
                [route, method], list(zip(bounds, cumulative, strict=True)), histogram[-1]
            )
        yield latency


class Histogram:
    """Durations counted per bucket, with their sum, for one unlabelled Prometheus
    histogram. Like `HttpMetrics`, plain numbers kept by the event loop's one thread
    (observations and scrapes alike), handed to prometheus-client at scrape time."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self._counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.count = 0
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self._counts[bisect_left(self.buckets, seconds)] += 1
        self.count += 1
        self.sum += seconds

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        bounds = [*(str(float(bound)) for bound in self.buckets), "+Inf"]
        cumulative = list(accumulate(self._counts))
        family = HistogramMetricFamily(name, documentation)
        family.add_metric([], list(zip(bounds, cumulative, strict=True)), self.sum)
        return family


# Seconds from a webhook stored (and acknowledged) to applied: the applier rests 0.05 s
# between busy batches, so under load most of it lies between 0.01 s and 0.25 s.
APPLY_LAG_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


@dataclass
class Snapshot:
    """Values read from the database by the `/metrics` handler just before rendering."""

    instances_by_status: Mapping[str, int] = field(default_factory=dict)
    outbox_by_status: Mapping[str, int] = field(default_factory=dict)
    oldest_pending_notification_age: float = 0.0
    inbox_backlog: int = 0
    oldest_unapplied_webhook_age: float = 0.0
    # Seconds the longest-waiting instance has been in each transitional status.
    oldest_in_status: Mapping[str, float] = field(default_factory=dict)
    database_up: bool = True


class ServiceCollector(Collector):
    """Reads the live objects of a running service at scrape time."""

    def __init__(self, resources: Any, workers: Any = None) -> None:
        self.resources = resources
        self.workers = workers
        self.snapshot = Snapshot()

    def collect(self) -> Iterator[Metric]:
        yield from self._novita()
        yield from self._ingest()
        yield from self._database()
        yield from self._workers()

    def _novita(self) -> Iterator[Metric]:
        status = self.resources.novita.status()
        breaker = GaugeMetricFamily(
            "novita_breaker_state", "Circuit breaker: 0 closed, 1 half-open, 2 open."
        )
        breaker.add_metric([], BREAKER_STATES.get(status.breaker_state, -1))
        yield breaker
        backlog = GaugeMetricFamily("novita_limiter_backlog", "Callers waiting for the limiter.")
        backlog.add_metric([], status.limiter_backlog)
        yield backlog
        calls = CounterMetricFamily(
            "novita_requests", "Requests sent to Novita, by endpoint.", labels=["endpoint"]
        )
        for endpoint, count in status.requests_by_endpoint.items():
            calls.add_metric([endpoint], count)
        yield calls
        errors = CounterMetricFamily(
            "novita_errors", "Novita calls that failed, by error code.", labels=["code"]
        )
        for code, count in status.errors_by_code.items():
            errors.add_metric([code], count)
        yield errors
        retries = CounterMetricFamily("novita_retries", "Retried Novita calls.")
        retries.add_metric([], status.retries)
        yield retries

    def _ingest(self) -> Iterator[Metric]:
        writer = self.resources.inbox
        if writer is None:
            return
        ingested = CounterMetricFamily(
            "webhooks_ingested", "Inbound webhooks acknowledged, by outcome.", labels=["outcome"]
        )
        ingested.add_metric(["stored"], writer.stored)
        ingested.add_metric(["duplicate"], writer.duplicates)
        yield ingested
        rejected = CounterMetricFamily(
            "webhooks_rejected", "Inbound webhooks refused, by reason.", labels=["reason"]
        )
        for reason, count in getattr(writer, "rejected", {}).items():
            rejected.add_metric([reason], count)
        yield rejected
        queue = GaugeMetricFamily("webhooks_ingest_queue", "Webhooks waiting to be stored.")
        queue.add_metric([], writer.backlog)
        yield queue
        yield self.resources.apply_lag.family(
            "webhooks_apply_lag_seconds",
            "Seconds from a webhook stored and acknowledged to applied, by this process's "
            "applier (received_at to processed_at).",
        )

    def _database(self) -> Iterator[Metric]:
        snapshot = self.snapshot
        instances = GaugeMetricFamily(
            "instances", "Instances by service status.", labels=["status"]
        )
        for status, count in snapshot.instances_by_status.items():
            instances.add_metric([status], count)
        yield instances
        notifications = GaugeMetricFamily(
            "notifications", "Notifications by delivery status.", labels=["status"]
        )
        for status, count in snapshot.outbox_by_status.items():
            notifications.add_metric([status], count)
        yield notifications
        age = GaugeMetricFamily(
            "notifications_oldest_pending_age_seconds", "Age of the oldest pending notification."
        )
        age.add_metric([], snapshot.oldest_pending_notification_age)
        yield age
        inbox = GaugeMetricFamily("webhooks_inbox_backlog", "Stored webhooks not yet applied.")
        inbox.add_metric([], snapshot.inbox_backlog)
        yield inbox
        unapplied = GaugeMetricFamily(
            "webhooks_oldest_unapplied_age_seconds",
            "Age of the oldest stored webhook not yet applied (0: none).",
        )
        unapplied.add_metric([], snapshot.oldest_unapplied_webhook_age)
        yield unapplied
        waiting = GaugeMetricFamily(
            "instances_oldest_in_status_seconds",
            "Seconds the longest-waiting instance has been in a transitional status.",
            labels=["status"],
        )
        for status, seconds in snapshot.oldest_in_status.items():
            waiting.add_metric([status], seconds)
        yield waiting
        up = GaugeMetricFamily(
            "database_up", "1 when the database answered this scrape's queries, else 0."
        )
        up.add_metric([], 1 if snapshot.database_up else 0)
        yield up

    def _workers(self) -> Iterator[Metric]:
        if self.workers is None:
            return
        iterations = CounterMetricFamily(
            "worker_iterations", "Worker batches completed.", labels=["worker"]
        )
        failures = CounterMetricFamily(
            "worker_failures", "Worker batches that raised.", labels=["worker"]
        )
        for loop in self.workers.loops:
            iterations.add_metric([loop.worker.name], loop.iterations)
            failures.add_metric([loop.worker.name], loop.failures)
        yield iterations
        yield failures
        now = self.resources.clock.now()
        for loop in self.workers.loops:
            for camel, value in loop.worker.figures(now).items():
                if value is None:
                    continue  # an age not known yet: no sample
                name = re.sub(r"(?<!^)(?=[A-Z])", "_", camel).lower()
                family = GaugeMetricFamily(
                    f"{loop.worker.name}_{name}", f"{loop.worker.name}: {name.replace('_', ' ')}."
                )
                family.add_metric([], float(value))
                yield family
