"""Prometheus metrics of one server process, served over HTTP at /metrics.

RPC metrics follow the names of the usual gRPC Prometheus interceptors
(``grpc_server_started_total``, ``grpc_server_handled_total``,
``grpc_server_handling_seconds``); qrsys adds calls in flight, the database
pool, the render cache and throttled logins.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import start_http_server
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


@dataclass(frozen=True)
class PoolStats:
    """What the database pool reports."""

    size: int
    checked_out: int
    overflow: int


@dataclass(frozen=True)
class CacheStats:
    """What the render cache reports."""

    hits: int
    misses: int
    current_bytes: int
    max_bytes: int


@dataclass(frozen=True)
class SessionStats:
    """What the memory of live sessions reports."""

    hits: int
    misses: int
    entries: int
    listening: bool


class _StatsCollector(Collector):
    """Reads the pool and caches at scrape time."""

    def __init__(
        self,
        pool: Callable[[], PoolStats],
        cache: Callable[[], CacheStats],
        sessions: Callable[[], SessionStats],
    ) -> None:
        self._pool = pool
        self._cache = cache
        self._sessions = sessions

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        pool = self._pool()
        yield GaugeMetricFamily(
            "qrsys_db_pool_size", "Connections the pool keeps open.", pool.size
        )
        yield GaugeMetricFamily(
            "qrsys_db_pool_checked_out",
            "Connections in use by calls right now.",
            pool.checked_out,
        )
        cache = self._cache()
        yield CounterMetricFamily(
            "qrsys_render_cache_hits",
            "Renders answered from the cache.",
            cache.hits,
        )
        yield CounterMetricFamily(
            "qrsys_render_cache_misses",
            "Renders that had to draw the image.",
            cache.misses,
        )
        yield GaugeMetricFamily(
            "qrsys_render_cache_bytes",
            "Bytes the render cache holds.",
            cache.current_bytes,
        )
        yield GaugeMetricFamily(
            "qrsys_render_cache_max_bytes",
            "The render cache's bound in bytes.",
            cache.max_bytes,
        )
        sessions = self._sessions()
        yield CounterMetricFamily(
            "qrsys_session_cache_hits",
            "Session checks answered from memory.",
            sessions.hits,
        )
        yield CounterMetricFamily(
            "qrsys_session_cache_misses",
            "Session checks that asked the database.",
            sessions.misses,
        )
        yield GaugeMetricFamily(
            "qrsys_session_cache_entries",
            "Live sessions held in memory.",
            sessions.entries,
        )
        yield GaugeMetricFamily(
            "qrsys_session_notices_listening",
            "1 while ended-session notices arrive from PostgreSQL, else 0.",
            1 if sessions.listening else 0,
        )


class Metrics:
    """The metrics of one server, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ("grpc_type", "grpc_service", "grpc_method")
        self.started = Counter(
            "grpc_server_started_total",
            "RPCs started on the server.",
            labels,
            registry=self.registry,
        )
        self.handled = Counter(
            "grpc_server_handled_total",
            "RPCs completed on the server, by status code.",
            (*labels, "grpc_code"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "grpc_server_handling_seconds",
            "Time from the start of an RPC to its status.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "qrsys_rpcs_in_flight",
            "RPCs being handled right now.",
            labels,
            registry=self.registry,
        )
        self.logins_throttled = Counter(
            "qrsys_logins_throttled_total",
            "Login attempts refused because of earlier failures.",
            registry=self.registry,
        )
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def watch(
        self,
        pool: Callable[[], PoolStats],
        cache: Callable[[], CacheStats],
        sessions: Callable[[], SessionStats],
    ) -> None:
        """Report the pool and caches at every scrape."""
        self.registry.register(_StatsCollector(pool, cache, sessions))

    def serve(self, address: str) -> int:
        """Serve /metrics over HTTP on ``host:port``; return the bound port.

        Raises:
            OSError: the address cannot be bound.
            ValueError: the address is not ``host:port``.
        """
        host, sep, port = address.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"not a host:port address: {address!r}")
        # ":9100" (no host) means every interface, as for any listener.
        bind_host = host.strip("[]") or "0.0.0.0"  # noqa: S104
        self._server, self._thread = start_http_server(
            int(port), addr=bind_host, registry=self.registry
        )
        return int(self._server.server_port)

    def close(self) -> None:
        """Stop serving /metrics."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
