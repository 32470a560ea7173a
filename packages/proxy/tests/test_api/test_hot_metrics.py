"""The lock-free request metrics expose exactly what prometheus-client's own would."""

from __future__ import annotations

import pytest
from apikeyrouter_proxy.observability.hot_metrics import HotCounter, HotHistogram
from apikeyrouter_proxy.observability.metrics import LATENCY_BUCKETS, OVERHEAD_BUCKETS
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

VALUES = [0.0, 0.00005, 0.0004, 0.0005, 0.0007, 0.003, 0.2, 2.5, 59.9, 60.0, 75.0, 1e-9]


@pytest.mark.parametrize("buckets", [LATENCY_BUCKETS, OVERHEAD_BUCKETS])
def test_histogram_exposition_matches_prometheus_client(buckets: tuple[float, ...]) -> None:
    reference, hot_registry = CollectorRegistry(), CollectorRegistry()
    expected = Histogram("t_seconds", "doc", ["route"], buckets=buckets, registry=reference)
    hot = HotHistogram("t_seconds", "doc", ["route"], buckets)
    hot_registry.register(hot)
    for n, value in enumerate(VALUES):
        route = f"/r{n % 3}"
        expected.labels(route).observe(value)
        hot.observe((route,), value)
    assert generate_latest(hot_registry) == generate_latest(reference)


def test_counter_exposition_matches_prometheus_client() -> None:
    reference, hot_registry = CollectorRegistry(), CollectorRegistry()
    expected = Counter("t_requests", "doc", ["route", "status"], registry=reference)
    hot = HotCounter("t_requests", "doc", ["route", "status"])
    hot_registry.register(hot)
    for route, status, amount in [("/a", "200", 1.0), ("/b", "429", 2.5), ("/a", "200", 0.25)]:
        expected.labels(route, status).inc(amount)
        hot.inc((route, status), amount)
    assert generate_latest(hot_registry) == generate_latest(reference)


def test_buckets_must_increase() -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        HotHistogram("t", "doc", [], (0.1, 0.1, 1.0))
