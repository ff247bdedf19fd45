"""Prometheus metrics, served on ``[metrics] listen`` when it is set.

Counters and the lateness histogram are kept by the loops as they work;
the sizes of the retry set, dead set and invalid list are read from Redis
when Prometheus scrapes, so they are right whichever daemon did the work.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import redis
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from recoveryd.keys import Keys

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

__all__ = ["METRICS", "Metrics", "parse_listen"]

log = logging.getLogger(__name__)

# Lateness of a dispatch against its due time: most should land in the
# first buckets; the tail shows a backlog or a stalled loop.
LATENESS_BUCKETS_S = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 120)


class Metrics:
    """The daemon's metrics, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        r = self.registry
        self.received = Counter(
            "recoveryd_failures_received",
            "Failure records taken off the list, by category.",
            ["category"],
            registry=r,
        )
        self.outcomes = Counter(
            "recoveryd_outcomes",
            "What became of each record: scheduled, dead, notified or invalid.",
            ["outcome"],
            registry=r,
        )
        self.dispatched = Counter(
            "recoveryd_retries_dispatched",
            "Due retries pushed back onto their queues.",
            registry=r,
        )
        self.lateness = Histogram(
            "recoveryd_dispatch_lateness_seconds",
            "How long after its due time a retry was dispatched.",
            buckets=LATENESS_BUCKETS_S,
            registry=r,
        )
        self.deliveries = Counter(
            "recoveryd_notifications",
            "Notification deliveries by channel and result "
            "(delivered, failed, undeliverable).",
            ["channel", "result"],
            registry=r,
        )
        self.redis_up = Gauge(
            "recoveryd_redis_up",
            "1 while Redis answers the daemon, else 0.",
            registry=r,
        )
        self.redis_up.set(1)

    def count_batch(self, tally: Mapping[str, int]) -> None:
        """Count one committed intake batch (its stats tally)."""
        for name, count in tally.items():
            if name.startswith("category:"):
                self.received.labels(name.removeprefix("category:")).inc(count)
            elif name in ("scheduled", "dead", "notified", "invalid"):
                self.outcomes.labels(name).inc(count)

    def count_dispatch(self, dispatched: int, lateness_ms: Iterable[int]) -> None:
        self.dispatched.inc(dispatched)
        for ms in lateness_ms:
            self.lateness.observe(max(ms, 0) / 1000)

    def serve(self, listen: str, url: str, keys: Keys) -> None:
        """Start the HTTP endpoint (a thread) and the Redis-backed gauges."""
        host, port = parse_listen(listen)
        self.registry.register(_RedisSizes(url, keys))
        start_http_server(port, addr=host, registry=self.registry)
        log.info("metrics on http://%s:%d/metrics", host, port)


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:9464`` for IPv6) into its parts."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f'expected "host:port", got {listen!r}')
    return host.strip("[]") or "127.0.0.1", int(port)


class _RedisSizes(Collector):
    """Gauges read from Redis at scrape time: pending, due, dead, invalid."""

    def __init__(self, url: str, keys: Keys) -> None:
        self._client = redis.Redis.from_url(
            url, socket_timeout=2, socket_connect_timeout=2
        )
        self._keys = keys

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        keys = self._keys
        try:
            pipe = self._client.pipeline(transaction=False)
            pipe.zcard(keys.retry)
            pipe.zcard(keys.dead)
            pipe.llen(keys.invalid)
            pipe.llen(keys.failures)
            pending, dead, invalid, waiting = pipe.execute()
        except redis.RedisError:
            return
        yield _gauge(
            "recoveryd_retries_pending", "Retries scheduled, due or not.", pending
        )
        yield _gauge("recoveryd_dead_tasks", "Tasks in the dead set.", dead)
        yield _gauge("recoveryd_invalid_records", "Records parked as invalid.", invalid)
        yield _gauge(
            "recoveryd_failures_waiting", "Records waiting on the list.", waiting
        )


def _gauge(name: str, text: str, value: Any) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, text, value=float(value))


METRICS = Metrics()
