"""What Prometheus says about each TiKV and PD target in one look: QPS, gRPC p99, raft
apply/append p99, store size (used, capacity, available), and whether it could scrape the
target at all."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field

from operator_console.subjects.tikv import queries
from operator_console.subjects.tikv.prometheus import PrometheusClient
from operator_console.subjects.tikv.queries import Query, TargetLabels
from operator_console.subjects.tikv.state import StoreMetrics


@dataclass(slots=True)
class ClusterMetrics:
    """Values keyed by the `instance` label, as the deployment's Prometheus names targets."""

    stores: dict[str, StoreMetrics] = field(default_factory=dict)
    up: dict[str, bool] = field(default_factory=dict)  # every TiKV and PD target

    def for_store(self, instance: str) -> StoreMetrics:
        found = self.stores.get(instance)
        if found is not None:
            return found
        return StoreMetrics(instance, up=self.up.get(instance))


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _ms(value: float | None) -> float | None:
    finite = _finite(value)
    return round(finite * 1000, 3) if finite is not None else None


class MetricsReader:
    """Runs the per-tick queries of one cluster against one Prometheus."""

    def __init__(self, client: PrometheusClient, labels: TargetLabels, window: str) -> None:
        self.client = client
        self.labels = labels
        self.window = window

    def _queries(self) -> dict[str, Query]:
        t, w = self.labels, self.window
        return {
            "qps": queries.tikv_qps(t, w),
            "grpc_p99": queries.tikv_grpc_p99(t, w),
            "apply_p99": queries.tikv_apply_log_p99(t, w),
            "append_p99": queries.tikv_append_log_p99(t, w),
            "available_ratio": queries.tikv_available_ratio(t),
            "used": queries.tikv_store_size(t, "used"),
            "capacity": queries.tikv_store_size(t, "capacity"),
            "up": queries.targets_up(t),
        }

    async def read(self) -> ClusterMetrics:
        """Every per-tick query at once; the first that fails raises (PrometheusError)."""
        named = self._queries()
        answers = await asyncio.gather(
            *(self.client.vector(q.promql) for q in named.values()), return_exceptions=True
        )
        by_name: dict[str, dict[str, float]] = {}
        for (name, query), answer in zip(named.items(), answers, strict=True):
            if isinstance(answer, BaseException):
                raise answer
            by_name[name] = answer.by(query.by)
        out = ClusterMetrics(up={k: v == 1 for k, v in by_name["up"].items()})
        instances = set(by_name["qps"]) | set(by_name["grpc_p99"]) | set(by_name["append_p99"])
        for instance in instances | set(by_name["available_ratio"]):
            out.stores[instance] = StoreMetrics(
                instance=instance,
                up=out.up.get(instance),
                qps=_finite(by_name["qps"].get(instance)),
                grpc_p99_ms=_ms(by_name["grpc_p99"].get(instance)),
                apply_p99_ms=_ms(by_name["apply_p99"].get(instance)),
                append_p99_ms=_ms(by_name["append_p99"].get(instance)),
                available_ratio=_finite(by_name["available_ratio"].get(instance)),
                used_bytes=_finite(by_name["used"].get(instance)),
                capacity_bytes=_finite(by_name["capacity"].get(instance)),
            )
        return out

    async def named(self, name: str) -> dict[str, float]:
        """One of the standard queries by name, its values keyed by its label."""
        for query in queries.standard_queries(self.labels, self.window):
            if query.name == name:
                return (await self.client.vector(query.promql)).by(query.by)
        raise ValueError(f"unknown query {name!r} (queries: {', '.join(query_names())})")


def query_names() -> list[str]:
    return [q.name for q in queries.standard_queries(TargetLabels())]
