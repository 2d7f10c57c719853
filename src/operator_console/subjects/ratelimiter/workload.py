"""The rate limiter's workload: the console's own clients (a load generator that is also the load
balancer), or, for a cluster the console did not start, the nodes' own check counters."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx

from operator_console.contract import SampleSink, SeriesSpec
from operator_console.domain import WorkloadSample, utcnow
from operator_console.subjects.ratelimiter.observer import _parse_metrics, bucket_quantile
from operator_console.subjects.ratelimiter.spec import WorkloadChange, WorkloadSpec, parse

log = logging.getLogger(__name__)

WARM_UP_S = 1.5
SAMPLE_S = 1.0


def traffic_series(p99_alarm_ms: float) -> tuple[SeriesSpec, ...]:
    """What the clients saw each second, with the latency SLO as the p99 alarm."""
    return (
        SeriesSpec("offered", "offered"),
        SeriesSpec("allowed", "allowed"),
        SeriesSpec("denied", "denied"),
        SeriesSpec("errors", "errors", alarm=0.0),
        SeriesSpec("p99_ms", "p99", unit="ms", alarm=p99_alarm_ms, digits=1),
    )


class RateLimiterWorkload:
    """The load generator, created once the cluster's node addresses are known."""

    def __init__(
        self,
        targets: Callable[[], dict[str, str]],
        spec: WorkloadSpec,
        on_sample: SampleSink,
        *,
        p99_alarm_ms: float,
    ) -> None:
        self._targets = targets
        self._spec = spec
        self._on_sample = on_sample
        self.series: Sequence[SeriesSpec] = traffic_series(p99_alarm_ms)
        self.generator: Any = None

    async def start(self) -> None:
        from operator_console.lab.ratelimiter.loadgen import LoadGenerator

        spec = self._spec
        self.generator = LoadGenerator(
            self._targets(),
            rate=spec.rate or 60.0,
            keys=[f"user:{i}" for i in range(1, spec.keys + 1)],
            hot_keys=spec.hot_keys or {},
            on_sample=self._on_sample,
            timeout_s=spec.timeout_s,
        )
        await self.generator.start()
        # Fresh processes answer their first requests slowly (connections, script loading,
        # lazy imports); those must not count against the latency SLO.
        await asyncio.sleep(WARM_UP_S)
        self.generator.clear_stats()

    async def stop(self) -> None:
        if self.generator is not None:
            await self.generator.stop()

    def adjust(self, changes: Mapping[str, Any]) -> None:
        change: WorkloadChange = parse(WorkloadChange, changes, "workload")
        if self.generator is None:
            return
        if change.rate is not None:
            self.generator.set_rate(change.rate)
        if change.hot_keys is not None:
            self.generator.set_hot_keys(change.hot_keys)

    # What the observer reads (WorkloadSource).
    @property
    def drained(self) -> frozenset[str]:
        return self.generator.drained if self.generator is not None else frozenset()

    @property
    def ground_truth(self) -> Any:
        return self.generator.ground_truth

    def target_stats(self, window_s: float = 5.0) -> Any:
        if self.generator is None:
            return {}
        return self.generator.target_stats(window_s)


class CounterSampler:
    """For a cluster the console did not start: each second, the checks every node counted
    (by result) and the p99 of its own latency histogram, from its `/metrics`."""

    def __init__(
        self,
        nodes: Mapping[str, str],
        http: Callable[[], httpx.AsyncClient],
        on_sample: SampleSink,
        *,
        p99_alarm_ms: float,
    ) -> None:
        self._nodes = dict(nodes)
        self._http = http
        self._on_sample = on_sample
        self.series: Sequence[SeriesSpec] = (
            SeriesSpec("allowed", "allowed"),
            SeriesSpec("denied", "denied"),
            SeriesSpec("errors", "errors", alarm=0.0),
            SeriesSpec("p99_ms", "node p99", unit="ms", alarm=p99_alarm_ms, digits=1),
        )
        self._last: dict[str, tuple[dict[str, float], dict[float, float]]] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="counter-sampler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def adjust(self, changes: Mapping[str, Any]) -> None:
        raise ValueError("the console does not drive this cluster's traffic (attached)")

    async def _loop(self) -> None:
        next_at = time.monotonic()
        while True:
            next_at += SAMPLE_S
            try:
                self._on_sample(await self.sample())
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sampling the nodes' counters failed")
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def _read(self, name: str, url: str) -> tuple[dict[str, float], dict[float, float]]:
        response = await self._http().get(f"{url}/metrics", timeout=SAMPLE_S)
        response.raise_for_status()
        checks, _errors, buckets = _parse_metrics(response.text)
        return checks, buckets

    async def sample(self) -> WorkloadSample:
        """The counters' growth since the last sample, per node and in total."""
        reads = await asyncio.gather(
            *(self._read(name, url) for name, url in self._nodes.items()), return_exceptions=True
        )
        totals = {"allowed": 0.0, "denied": 0.0, "errors": 0.0}
        per_target: dict[str, dict[str, Any]] = {}
        worst: float | None = None
        for name, read in zip(self._nodes, reads, strict=True):
            if isinstance(read, BaseException):
                per_target[name] = {"reachable": False}
                continue
            checks, buckets = read
            before_checks, before_buckets = self._last.get(name, (checks, buckets))
            if any(checks.get(k, 0.0) < v for k, v in before_checks.items()):
                before_checks, before_buckets = {}, {}  # the node restarted: counters began again
            self._last[name] = (checks, buckets)
            grew = {k: checks.get(k, 0.0) - before_checks.get(k, 0.0) for k in checks}
            allowed = grew.get("allowed", 0.0) + grew.get("unsynced", 0.0)
            denied = grew.get("denied", 0.0)
            errors = grew.get("error", 0.0)
            p99, count = bucket_quantile(buckets, before_buckets, 0.99)
            p99_ms = round(p99 * 1000, 1) if p99 is not None and count else None
            if p99_ms is not None:
                worst = p99_ms if worst is None else max(worst, p99_ms)
            totals["allowed"] += allowed
            totals["denied"] += denied
            totals["errors"] += errors
            per_target[name] = {
                "allowed": allowed,
                "denied": denied,
                "errors": errors,
                "p99_ms": p99_ms,
            }
        return WorkloadSample(
            at=utcnow(), values={**totals, "p99_ms": worst}, per_target=per_target
        )
