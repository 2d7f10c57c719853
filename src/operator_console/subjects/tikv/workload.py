"""The workload panel of a TiKV cluster the console did not start: it only measures. Each
second, Prometheus's QPS and gRPC p99; without Prometheus, PD's region and leader counts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from operator_console.contract import SampleSink, SeriesSpec
from operator_console.domain import WorkloadSample, utcnow
from operator_console.subjects.tikv import queries
from operator_console.subjects.tikv.metrics import MetricsReader
from operator_console.subjects.tikv.pd import PDClient
from operator_console.subjects.tikv.pd_errors import PDError
from operator_console.subjects.tikv.prometheus import PrometheusError
from operator_console.subjects.tikv.state import store_target

log = logging.getLogger(__name__)

SAMPLE_S = 1.0
InstanceTargets = Callable[[], Mapping[str, str]]


def prometheus_series(p99_alarm_ms: float) -> tuple[SeriesSpec, ...]:
    return (
        SeriesSpec("qps", "QPS (all stores)", unit="/s"),
        SeriesSpec(
            "grpc_p99_ms", "gRPC p99 (slowest store)", unit="ms", alarm=p99_alarm_ms, digits=1
        ),
    )


PD_SERIES = (
    SeriesSpec("regions", "regions", unit="regions"),
    SeriesSpec("leaders_min", "fewest leaders on an Up store", unit="leaders"),
    SeriesSpec("leaders_max", "most leaders on an Up store", unit="leaders"),
)


class TikvSampler:
    """Samples once a second; a failed read gives a sample without values (a gap)."""

    def __init__(
        self,
        on_sample: SampleSink,
        *,
        pd: PDClient,
        metrics: MetricsReader | None,
        targets: InstanceTargets,
        p99_alarm_ms: float,
    ) -> None:
        self._on_sample = on_sample
        self._pd = pd
        self._metrics = metrics
        self._targets = targets
        self.series: Sequence[SeriesSpec] = (
            prometheus_series(p99_alarm_ms) if metrics is not None else PD_SERIES
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="tikv-sampler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def adjust(self, changes: Mapping[str, Any]) -> None:
        raise ValueError("the console does not drive this cluster's traffic (attached)")

    async def ground_truth(self) -> dict[str, Any] | None:
        return None  # it only counts what the cluster reports: no record of its own

    async def _loop(self) -> None:
        next_at = time.monotonic()
        while True:
            next_at += SAMPLE_S
            try:
                sample = await self.sample()
            except asyncio.CancelledError:
                raise
            except (PDError, PrometheusError, OSError) as exc:
                log.info("sampling the cluster failed: %s", exc)
                sample = WorkloadSample(
                    at=utcnow(), values=dict.fromkeys((s.key for s in self.series), None)
                )
            except Exception:
                log.exception("sampling the cluster failed")
                sample = WorkloadSample(at=utcnow(), values={})
            self._on_sample(sample)
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def sample(self) -> WorkloadSample:
        if self._metrics is not None:
            return await self._from_prometheus(self._metrics)
        return await self._from_pd()

    async def _from_prometheus(self, metrics: MetricsReader) -> WorkloadSample:
        t, w = metrics.labels, metrics.window
        qps_q, p99_q = queries.tikv_qps(t, w), queries.tikv_grpc_p99(t, w)
        qps, p99 = await asyncio.gather(
            metrics.client.vector(qps_q.promql), metrics.client.vector(p99_q.promql)
        )
        by_instance = self._targets()
        per_target: dict[str, dict[str, Any]] = {}
        for instance, value in qps.by(qps_q.by).items():
            per_target.setdefault(by_instance.get(instance, instance), {})["qps"] = value
        worst: float | None = None
        for instance, value in p99.by(p99_q.by).items():
            if not math.isfinite(value):
                continue
            ms = round(value * 1000, 3)
            per_target.setdefault(by_instance.get(instance, instance), {})["p99_ms"] = ms
            worst = ms if worst is None else max(worst, ms)
        total = sum(v.get("qps", 0.0) for v in per_target.values()) if per_target else None
        return WorkloadSample(
            at=utcnow(), values={"qps": total, "grpc_p99_ms": worst}, per_target=per_target
        )

    async def _from_pd(self) -> WorkloadSample:
        stores, stats = await asyncio.gather(
            self._pd.stores(), self._pd.region_stats(count_only=True)
        )
        up = [s for s in stores if s.state_name == "Up"]
        leaders = [s.leader_count for s in up]
        return WorkloadSample(
            at=utcnow(),
            values={
                "regions": float(stats.count),
                "leaders_min": float(min(leaders)) if leaders else None,
                "leaders_max": float(max(leaders)) if leaders else None,
            },
            per_target={
                store_target(s.id): {
                    "leaders": s.leader_count,
                    "regions": s.region_count,
                    "state": s.state_name,
                }
                for s in stores
            },
        )
