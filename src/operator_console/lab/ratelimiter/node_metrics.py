"""What a node counts: node-local check tallies and the Prometheus metrics it exports."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from operator_console.lab.ratelimiter.node_failpoints import FAILPOINT_NAMES, Failpoints

RESULTS = ("allowed", "denied", "unsynced", "error")
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0)


def _zero() -> dict[str, int]:
    return dict.fromkeys(RESULTS, 0)


class CheckCounters:
    """Per-result totals and per-key tallies since start; keys past the cap count in totals only."""

    def __init__(self, max_keys: int = 1000) -> None:
        self.max_keys = max_keys
        self.totals = _zero()
        self.keys: dict[str, dict[str, int]] = {}
        self.untracked_keys = False

    def record(self, key: str, result: str) -> None:
        self.totals[result] += 1
        per_key = self.keys.get(key)
        if per_key is None:
            if len(self.keys) >= self.max_keys:
                self.untracked_keys = True
                return
            per_key = self.keys[key] = _zero()
        per_key[result] += 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "totals": dict(self.totals),
            "keys": {k: dict(v) for k, v in self.keys.items()},
            "keys_truncated": self.untracked_keys,
        }


class NodeMetrics:
    """The node's Prometheus metrics, in a registry of its own so apps never share series."""

    def __init__(
        self,
        node: str,
        *,
        failpoints: Failpoints,
        config_version: Callable[[], float],
        config_age_s: Callable[[], float],
    ) -> None:
        self.registry = CollectorRegistry()
        self._checks = Counter(
            "ratelimiter_checks_total",
            "Rate-limit checks answered, by result.",
            ["node", "result"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "ratelimiter_check_latency_seconds",
            "Time to answer one rate-limit check.",
            ["node"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._store_errors = Counter(
            "ratelimiter_store_errors_total",
            "Store calls on the check path that failed or timed out.",
            ["node"],
            registry=self.registry,
        )
        version = Gauge(
            "ratelimiter_config_version",
            "Limits config version this node has loaded.",
            ["node"],
            registry=self.registry,
        )
        age = Gauge(
            "ratelimiter_config_age_seconds",
            "Seconds since this node last refreshed its limits from the store.",
            ["node"],
            registry=self.registry,
        )
        active = Gauge(
            "ratelimiter_failpoint_active",
            "1 while a failpoint is set away from its default.",
            ["node", "name"],
            registry=self.registry,
        )
        for result in RESULTS:
            self._checks.labels(node=node, result=result)
        self._store_errors.labels(node=node)
        version.labels(node=node).set_function(config_version)
        age.labels(node=node).set_function(config_age_s)
        for name in FAILPOINT_NAMES:
            active.labels(node=node, name=name).set_function(
                lambda name=name: float(failpoints.active(name))  # type: ignore[misc]
            )
        self._node = node

    def observe_check(self, result: str, seconds: float) -> None:
        self._checks.labels(node=self._node, result=result).inc()
        self._latency.labels(node=self._node).observe(seconds)

    def store_error(self) -> None:
        self._store_errors.labels(node=self._node).inc()
