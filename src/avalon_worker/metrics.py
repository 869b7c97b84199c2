"""Prometheus metrics for the pool (`--metrics-port`): orders by workload and outcome, latency,
queue depth and pool size. Needs the optional `prometheus-client` package."""

from __future__ import annotations

from .errors import SetupError
from .pool import PoolMetrics

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class MetricsUnavailable(SetupError):
    """prometheus-client is not installed."""


class PrometheusMetrics(PoolMetrics):
    """Pool metrics in a registry of their own, served over HTTP by `start`."""

    def __init__(self) -> None:
        try:
            from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        except ImportError:
            raise MetricsUnavailable(
                "--metrics-port needs prometheus-client: pip install 'avalon-worker[metrics]' (in a checkout: "
                "pip install '.[metrics]')"
            ) from None
        self.registry = CollectorRegistry()
        self._orders = Counter(
            "avalon_worker_requests", "Requests answered, by method, workload and outcome",
            ["method", "workload", "outcome"], registry=self.registry,
        )
        self._latency = Histogram(
            "avalon_worker_request_seconds", "Time from receiving a request to sending its reply",
            ["method"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self._queue = Gauge("avalon_worker_queue_depth", "Requests waiting for a worker process", registry=self.registry)
        self._alive = Gauge("avalon_worker_pool_size", "Worker processes alive", registry=self.registry)
        self._busy = Gauge("avalon_worker_pool_busy", "Worker processes running a request", registry=self.registry)

    def start(self, port: int, addr: str = "0.0.0.0") -> None:
        from prometheus_client import start_http_server

        start_http_server(port, addr=addr, registry=self.registry)

    def observe(self, method: str, workload: str, status: str, seconds: float) -> None:
        self._orders.labels(method, workload, status.replace(" ", "-")).inc()
        self._latency.labels(method).observe(seconds)

    def set_queue_depth(self, depth: int) -> None:
        self._queue.set(depth)

    def set_pool_size(self, alive: int, busy: int) -> None:
        self._alive.set(alive)
        self._busy.set(busy)
