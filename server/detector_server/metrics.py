"""Prometheus metrics of one server, for both protocols (``GET /metrics`` on the HTTP port).

Each server has a registry of its own, so that two servers in one process (the tests) keep
their own counts. The names follow Prometheus' conventions (a unit suffix, ``_total`` on
counters):

- ``detector_calls_total{method, protocol, mode, status}``: finished calls; ``status`` is
  the gRPC code name for both protocols (OK, INVALID_ARGUMENT, RESOURCE_EXHAUSTED, ...), so
  that the two compare; ``mode`` is fcn or sliding for Detect, ``-`` for the others;
- ``detector_call_seconds{method, protocol}``: a histogram of the calls' latency;
- ``detector_calls_in_flight{protocol}``: calls being answered now;
- ``detector_calls_refused_total{protocol, reason}``: Detect calls refused before any
  work: ``busy`` (the server held its limit of calls) or ``too_large`` (over a budget);
- ``detector_detect_running`` and ``detector_detect_queued``: Detect calls running on a
  worker, and admitted but waiting for one.
"""
import time
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

# from a cheap call on the loop (1 ms) to the server's 25 s ceiling on a call
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0)


class Metrics:
    def __init__(self, admission=None):
        disable_created_metrics()  # the *_created series only double what a scrape stores
        self.registry = CollectorRegistry(auto_describe=True)
        self.calls = Counter("detector_calls", "Calls answered, by method, protocol, mode and status",
                             ("method", "protocol", "mode", "status"), registry=self.registry)
        self.latency = Histogram("detector_call_seconds", "Time to answer a call, in seconds",
                                 ("method", "protocol"), buckets=LATENCY_BUCKETS, registry=self.registry)
        self.in_flight = Gauge("detector_calls_in_flight", "Calls being answered now", ("protocol",),
                               registry=self.registry)
        self.refused = Counter("detector_calls_refused", "Detect calls refused before any work",
                               ("protocol", "reason"), registry=self.registry)
        if admission is not None:
            Gauge("detector_detect_running", "Detect calls running on a worker",
                  registry=self.registry).set_function(lambda: admission.active)
            Gauge("detector_detect_queued", "Detect calls admitted and waiting for a worker",
                  registry=self.registry).set_function(lambda: admission.inside - admission.active)

    @contextmanager
    def call(self, method, protocol):
        """Count a call in flight while the block runs, and its latency after. The block sets
        ``record["mode"]`` and ``record["status"]`` (default ``-`` and UNKNOWN)."""
        record = {"mode": "-", "status": "UNKNOWN"}
        gauge = self.in_flight.labels(protocol)
        gauge.inc()
        start = time.perf_counter()
        try:
            yield record
        finally:
            gauge.dec()
            self.latency.labels(method, protocol).observe(time.perf_counter() - start)
            self.calls.labels(method, protocol, record["mode"], record["status"]).inc()

    def exposition(self):
        """The Prometheus text exposition of every metric: bytes."""
        return generate_latest(self.registry)
