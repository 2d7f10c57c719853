"""The rate limiter's workload: the console's own clients (a process of their own that is also the
load balancer), or, for a cluster the console did not start, the nodes' own check counters."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import httpx

from operator_console.contract import SampleSink, SeriesSpec
from operator_console.domain import WorkloadSample, utcnow
from operator_console.subjects.ratelimiter.observer import _parse_metrics, bucket_quantile
from operator_console.subjects.ratelimiter.spec import WorkloadChange, WorkloadSpec, parse

if TYPE_CHECKING:
    from operator_console.lab.ratelimiter.cluster import RateLimiterCluster

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


class WorkloadError(RuntimeError):
    """The clients process could not be reached or refused a request."""


class RateLimiterWorkload:
    """The console's side of the clients process: it starts it (a lab process like the nodes),
    relays its samples every second, and asks it for per-node stats, ground truth and drains."""

    def __init__(
        self,
        cluster: RateLimiterCluster,
        spec: WorkloadSpec,
        on_sample: SampleSink,
        *,
        p99_alarm_ms: float,
    ) -> None:
        self._cluster = cluster
        self._spec = spec
        self._on_sample = on_sample
        self.series: Sequence[SeriesSpec] = traffic_series(p99_alarm_ms)
        self.url: str | None = None
        self._seq = 0
        self._drained: frozenset[str] = frozenset()
        self._rotation: list[str] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        spec = self._spec
        self.url = await self._cluster.start_clients(
            rate=spec.rate or 60.0,
            keys=spec.keys,
            hot_keys=spec.hot_keys or {},
            timeout_s=spec.timeout_s,
            seed=spec.seed,
        )
        # Fresh processes answer their first requests slowly; the clients leave them out of
        # their figures, and the run starts once they have.
        deadline = time.monotonic() + WARM_UP_S + 10
        while time.monotonic() < deadline:
            data = await self._get("/api/samples", after=self._seq)
            if data.get("warm"):
                break
            await asyncio.sleep(0.1)
        self._task = asyncio.create_task(self._relay(), name="workload-relay")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        if self.url is None:
            raise WorkloadError("the clients process is not running")
        try:
            response = await self._cluster.http.request(
                method, f"{self.url}{path}", timeout=SAMPLE_S, **kwargs
            )
        except httpx.HTTPError as exc:
            raise WorkloadError(f"the clients process at {self.url}: {exc!r}") from exc
        if response.status_code >= 400:
            raise WorkloadError(f"{method} {path}: HTTP {response.status_code} {response.text}")
        data: dict[str, Any] = response.json()
        return data

    async def _get(self, path: str, **params: Any) -> dict[str, Any]:
        return await self._request("GET", path, params=params)

    async def _relay(self) -> None:
        next_at = time.monotonic()
        while True:
            next_at += SAMPLE_S
            try:
                data = await self._get("/api/samples", after=self._seq)
                for raw in data.get("samples", []):
                    self._seq = max(self._seq, int(raw["seq"]))
                    self._on_sample(
                        WorkloadSample(
                            at=datetime.fromisoformat(raw["at"]),
                            values=raw["values"],
                            per_target=raw["per_target"],
                        )
                    )
                self._remember(await self._get("/api/rotation"))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("relaying the clients' samples failed", exc_info=True)
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    def _remember(self, rotation: dict[str, Any]) -> None:
        self._drained = frozenset(rotation.get("drained") or ())
        self._rotation = list(rotation.get("rotation") or ())

    def adjust(self, changes: Mapping[str, Any]) -> None:
        change: WorkloadChange = parse(WorkloadChange, changes, "workload")
        body: dict[str, Any] = {}
        if change.rate is not None:
            body["rate"] = change.rate
        if change.hot_keys is not None:
            body["hot_keys"] = change.hot_keys
        if body and self.url is not None:
            task = asyncio.get_running_loop().create_task(
                self._request("PUT", "/api/traffic", json=body)
            )
            task.add_done_callback(_log_failure)

    async def ground_truth(self) -> dict[str, Any] | None:
        """None: over_limit's ground truth (allowed per key in its window) is judged live by
        the observer against the limits of the moment; no end-of-run figure adds to it."""
        return None

    # What the observer, the tools and the actions read (WorkloadSource).
    @property
    def drained(self) -> frozenset[str]:
        return self._drained

    @property
    def rotation(self) -> list[str]:
        return list(self._rotation)

    async def target_stats(self, window_s: float = 5.0) -> dict[str, dict[str, Any]]:
        return await self._get("/api/stats", window_s=window_s)

    async def allowed(self, windows: dict[str, float], default_window_s: float) -> dict[str, int]:
        data = await self._request(
            "POST",
            "/api/truth",
            json={"windows": windows, "default_window_s": default_window_s},
        )
        return {str(k): int(v) for k, v in data.get("allowed", {}).items()}

    async def drain(self, node: str) -> list[str]:
        self._remember(await self._request("POST", f"/api/drain/{node}"))
        return self.rotation

    async def undrain(self, node: str) -> list[str]:
        self._remember(await self._request("DELETE", f"/api/drain/{node}"))
        return self.rotation


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("changing the clients' traffic failed: %s", task.exception())


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

    async def ground_truth(self) -> dict[str, Any] | None:
        return None  # it only counts what the cluster reports: no record of its own

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
