"""The ratelimiter subject: the project's own distributed rate limiter, run locally."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from operator_console.domain import Invariant
from operator_console.subjects import Deployment, SampleSink, SpecError
from operator_console.subjects.ratelimiter.invariants import Thresholds, default_invariants
from operator_console.subjects.ratelimiter.observer import RateLimiterObserver

WARM_UP_S = 1.5
ACTION_NAMES = (
    "restart_node",
    "resume_node",
    "drain_node",
    "undrain_node",
    "restart_store",
    "resume_store",
    "reload_config",
    "clear_failpoint",
    "reset_counter",
    "set_limit",
    "set_fail_mode",
)
FAULT_KINDS = (
    "node_kill",
    "node_pause",
    "store_pause",
    "link_latency",
    "link_cut",
    "clock_skew",
    "config_stuck",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ThresholdSpec(_Strict):
    latency_p99_ms: float = Field(default=250.0, gt=0)
    error_rate: float = Field(default=0.05, gt=0, lt=1)


class TopologySpec(_Strict):
    nodes: int = Field(default=3, ge=1, le=9)
    default_limit: int = Field(default=50, gt=0)
    window_ms: int = Field(default=5000, ge=100, le=600_000)
    fail_mode: Literal["open", "closed"] = "open"
    config_refresh_s: float = Field(default=1.0, gt=0, le=60)
    thresholds: ThresholdSpec = Field(default_factory=ThresholdSpec)


class WorkloadChange(_Strict):
    rate: float | None = Field(default=None, gt=0, le=2000)
    hot_keys: dict[str, float] | None = None

    @model_validator(mode="after")
    def _shares(self) -> WorkloadChange:
        if self.hot_keys is not None:
            if any(not 0 < share < 1 for share in self.hot_keys.values()):
                raise ValueError("each hot key share must be between 0 and 1")
            if sum(self.hot_keys.values()) > 1:
                raise ValueError("hot key shares add up to more than 1")
        return self


class WorkloadSpec(WorkloadChange):
    rate: float | None = Field(default=60.0, gt=0, le=2000)
    keys: int = Field(default=20, ge=1, le=100_000)
    hot_keys: dict[str, float] | None = Field(default_factory=lambda: {"user:hot": 0.4})
    timeout_s: float = Field(default=1.0, gt=0, le=30)


def _parse(model: type[BaseModel], data: Mapping[str, Any], prefix: str) -> Any:
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        field = f"{prefix}.{where}" if where else prefix
        raise SpecError(field, error["msg"]) from None


class RateLimiterWorkload:
    """The load generator, created once the cluster's node addresses are known."""

    def __init__(self, cluster: Any, spec: WorkloadSpec, on_sample: SampleSink) -> None:
        self._cluster = cluster
        self._spec = spec
        self._on_sample = on_sample
        self.generator: Any = None

    def _targets(self) -> dict[str, str]:
        return {name: self._cluster.node_url(name) for name in self._cluster.node_names}

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
        change = _parse(WorkloadChange, changes, "workload")
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


class RateLimiterKind:
    """Entry point of the ratelimiter subject."""

    name = "ratelimiter"
    description = "a distributed sliding-window rate limiter: N nodes sharing one Valkey store"

    def validate(self, topology: Mapping[str, Any], workload: Mapping[str, Any]) -> None:
        _parse(TopologySpec, topology, "topology")
        _parse(WorkloadSpec, workload, "workload")

    def validate_workload_change(self, changes: Mapping[str, Any]) -> None:
        _parse(WorkloadChange, changes, "workload")

    def fault_kinds(self) -> Sequence[str]:
        return FAULT_KINDS

    def invariant_names(self) -> Sequence[str]:
        return [invariant.name for invariant in default_invariants()]

    def action_names(self) -> Sequence[str]:
        return ACTION_NAMES

    def targets(self, topology: Mapping[str, Any]) -> Sequence[str]:
        spec: TopologySpec = _parse(TopologySpec, topology, "topology")
        return [f"node-{i}" for i in range(1, spec.nodes + 1)] + ["store"]

    def deploy(
        self,
        topology: Mapping[str, Any],
        workload: Mapping[str, Any],
        run_dir: Path,
        on_sample: SampleSink,
    ) -> Deployment:
        from operator_console.lab.ratelimiter.cluster import RateLimiterCluster

        topo: TopologySpec = _parse(TopologySpec, topology, "topology")
        load: WorkloadSpec = _parse(WorkloadSpec, workload, "workload")
        cluster = RateLimiterCluster(
            run_dir,
            nodes=topo.nodes,
            default_limit=topo.default_limit,
            window_ms=topo.window_ms,
            fail_mode=topo.fail_mode,
            config_refresh_s=topo.config_refresh_s,
        )
        driver = RateLimiterWorkload(cluster, load, on_sample)
        thresholds = Thresholds(
            latency_p99_ms=topo.thresholds.latency_p99_ms,
            error_rate=topo.thresholds.error_rate,
        )
        observer = _LazyObserver(cluster, driver, thresholds)
        from operator_console.subjects.ratelimiter.kit import RateLimiterAgentKit

        agent = RateLimiterAgentKit(cluster, driver, observer.observe)
        return Deployment(lab=cluster, subject=observer, workload=driver, agent=agent)


class _LazyObserver:
    """Builds the observer on first use, once the cluster knows its ports."""

    name = "ratelimiter"

    def __init__(self, cluster: Any, workload: RateLimiterWorkload, thresholds: Thresholds):
        self._cluster = cluster
        self._workload = workload
        self.invariants: list[Invariant] = default_invariants(thresholds)
        self._observer: RateLimiterObserver | None = None

    def _process_status(self, name: str) -> str | None:
        try:
            if name == "store":
                return str(self._cluster.store_status())
            return str(self._cluster.node_status(name))
        except (KeyError, LookupError, AttributeError):
            return None

    async def observe(self) -> Any:
        if self._observer is None:
            cluster = self._cluster
            self._observer = RateLimiterObserver(
                lambda: {name: cluster.node_url(name) for name in cluster.node_names},
                cluster.endpoints()["store"]["url"],
                invariants=self.invariants,
                workload=self._workload,
                process_status=self._process_status,
            )
        return await self._observer.observe()

    async def close(self) -> None:
        if self._observer is not None:
            await self._observer.close()
