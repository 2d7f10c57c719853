"""What the recorded /metrics captures imply, computed from the files, not from Prometheus.

Rates are the difference of the two captures over their 15 s; quantiles follow the
definition PromQL's histogram_quantile documents (linear within the bucket that holds
the rank, the lower bound 0 for the first bucket, the last finite bound for +Inf).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping

from prometheus_client.parser import text_string_to_metric_families

from tests.subjects.tikv.pd_server import MetricsDouble

Labels = tuple[tuple[str, str], ...]


def _samples(text: str) -> dict[tuple[str, Labels], float]:
    out: dict[tuple[str, Labels], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return out


def rates(metrics: MetricsDouble, target: str) -> dict[tuple[str, Labels], float]:
    """Per-second increase of every series of one target between its two captures."""
    interval = int(metrics.manifest["interval_s"])
    first = _samples(metrics.capture_text(target, 0))
    second = _samples(metrics.capture_text(target, interval))
    return {key: (second[key] - value) / interval for key, value in first.items()}


def value_at(
    metrics: MetricsDouble, target: str, name: str, labels: Mapping[str, str], step: int
) -> float:
    """A series' value `step` seconds after the first capture (the double's line)."""
    interval = int(metrics.manifest["interval_s"])
    key = (name, tuple(sorted(labels.items())))
    v0 = _samples(metrics.capture_text(target, 0))[key]
    v1 = _samples(metrics.capture_text(target, interval))[key]
    return v0 + (v1 - v0) * step / interval


def qps(metrics: MetricsDouble, target: str) -> float:
    return sum(
        rate
        for (name, labels), rate in rates(metrics, target).items()
        if name == "tikv_grpc_msg_duration_seconds_count" and dict(labels)["type"] != "kv_gc"
    )


def quantile(q: float, buckets: Mapping[float, float]) -> float:
    """histogram_quantile over cumulative bucket rates keyed by upper bound."""
    bounds = sorted(buckets)
    total = buckets[math.inf]
    if total == 0:
        return math.nan
    rank = q * total
    previous_bound, previous_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == math.inf:
                return previous_bound
            in_bucket = count - previous_count
            return previous_bound + (bound - previous_bound) * (rank - previous_count) / in_bucket
        previous_bound, previous_count = bound, count
    return previous_bound


def bucket_quantile(
    metrics: MetricsDouble,
    target: str,
    histogram: str,
    q: float = 0.99,
    keep: Callable[[dict[str, str]], bool] = lambda labels: True,
) -> float:
    """q-quantile of one target's histogram, summing the kept series bucket by bucket."""
    buckets: dict[float, float] = defaultdict(float)
    for (name, labels), rate in rates(metrics, target).items():
        label_map = dict(labels)
        if name == f"{histogram}_bucket" and keep(label_map):
            buckets[float(label_map["le"])] += rate
    return quantile(q, buckets)
