"""Counters and histograms updated on every request, exposed through prometheus-client.

prometheus-client's own metrics are thread-safe: each ``inc`` or ``observe`` takes a lock (a
histogram two), which the proxy pays several times per request although every update happens
on the one event-loop thread. These families keep plain numbers in dictionaries keyed by label
values, and a collector registered in the app's registry turns them into the same exposition
when ``/metrics`` is scraped (on the same thread, so no lock is needed either side).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

Labels = tuple[str, ...]


class HotCounter:
    """A counter family: ``inc(labels, amount)`` adds to one series."""

    __slots__ = ("_doc", "_label_names", "_name", "values")

    def __init__(self, name: str, documentation: str, label_names: Sequence[str]) -> None:
        self._name = name
        self._doc = documentation
        self._label_names = tuple(label_names)
        self.values: dict[Labels, float] = {}

    def inc(self, labels: Labels, amount: float = 1.0) -> None:
        values = self.values
        values[labels] = values.get(labels, 0.0) + amount

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._doc, labels=self._label_names)
        for labels, value in self.values.items():
            family.add_metric(labels, value)
        yield family


class HotHistogram:
    """A histogram family: ``observe(labels, value)`` counts one value in one series.

    A series is a list of per-bucket counts (not cumulative; the last one is ``+Inf``) followed
    by the sum; cumulative counts are computed when collected."""

    __slots__ = ("_bounds", "_doc", "_label_names", "_le", "_name", "series")

    def __init__(
        self, name: str, documentation: str, label_names: Sequence[str], buckets: Sequence[float]
    ) -> None:
        bounds = tuple(float(b) for b in buckets)
        if list(bounds) != sorted(set(bounds)):
            raise ValueError("histogram buckets must be strictly increasing")
        self._name = name
        self._doc = documentation
        self._label_names = tuple(label_names)
        self._bounds = bounds
        self._le = [floatToGoString(b) for b in bounds] + ["+Inf"]  # type: ignore[no-untyped-call]
        self.series: dict[Labels, list[float]] = {}

    def observe(self, labels: Labels, value: float) -> None:
        series = self.series.get(labels)
        if series is None:
            series = self.series[labels] = [0.0] * (len(self._bounds) + 2)
        series[bisect_left(self._bounds, value)] += 1.0  # "le": value <= the bucket's bound
        series[-1] += value

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self._name, self._doc, labels=self._label_names)
        for labels, series in self.series.items():
            cumulative = 0.0
            buckets = []
            for le, count in zip(self._le, series, strict=False):
                cumulative += count
                buckets.append((le, cumulative))
            family.add_metric(list(labels), buckets, series[-1])
        yield family
