"""Observing the rate limiter: each node's management API and /metrics, the store, the workload."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import httpx
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from operator_console.contract import ClusterView, Condition
from operator_console.domain import (
    Invariant,
    Observation,
    SourceState,
    SourceStatus,
    utcnow,
)
from operator_console.subjects.ratelimiter.panel import cluster_view, node_serving

WINDOW_KEY_PREFIX = "rl:window:"
# A node that does not answer its liveness endpoint this fast is down (paused, hung, gone).
LIVE_TIMEOUT_S = 0.5
# The store answers the console's PING this fast on loopback, even on a busy machine.
STORE_TIMEOUT_S = 0.5
REFRESH_TIMEOUT_S = 1.0
LIMITS_KEY = "rl:limits"
VERSION_KEY = "rl:config:version"
NODES_PREFIX = "rl:nodes:"


CLIENT_FIGURES = ("offered", "allowed", "denied", "errors", "p50_ms", "p99_ms")


class WorkloadSource(Protocol):
    """What the observer reads from the clients (their own account of what happened)."""

    @property
    def drained(self) -> frozenset[str]: ...

    async def target_stats(self, window_s: float = 5.0) -> Mapping[str, Mapping[str, Any]]: ...

    async def allowed(
        self, windows: dict[str, float], default_window_s: float
    ) -> Mapping[str, int]: ...


@dataclass(slots=True)
class Limit:
    limit: int
    window_ms: int


@dataclass(slots=True)
class NodeView:
    name: str
    url: str
    reachable: bool = False
    error: str | None = None
    healthy: bool | None = None
    health_latency_ms: float | None = None
    process: str | None = None
    store_reachable: bool | None = None
    store_error: str | None = None
    store_latency_ms: float | None = None  # the node's own ping of the store
    config_version: int | None = None
    config_age_s: float | None = None
    config_fresh: bool | None = None
    config_refresh_s: float | None = None
    fail_mode: str | None = None
    failpoints: dict[str, Any] = field(default_factory=dict)
    limits: dict[str, Limit] | None = None
    default_limit: Limit | None = None
    checks: dict[str, float] = field(default_factory=dict)
    store_errors: float | None = None
    # p99 of the node's own check latency over the stats window, from its histogram: unlike the
    # clients' figure it does not include time spent in the console's own process.
    server_p99_ms: float | None = None
    drained: bool = False
    registered: bool | None = None

    @property
    def state(self) -> str:
        """One word for the operator: up, down, paused, degraded, drained."""
        if self.process == "paused":
            return "paused"
        if not self.reachable:
            return "down"
        if self.healthy is False:
            return "degraded"
        if self.drained:
            return "drained"
        return "up"


@dataclass(slots=True)
class StoreView:
    url: str
    reachable: bool = False
    error: str | None = None
    latency_ms: float | None = None
    process: str | None = None
    config_version: int | None = None
    limits: dict[str, Limit] = field(default_factory=dict)
    registered_nodes: list[str] = field(default_factory=list)

    @property
    def state(self) -> str:
        if self.process == "paused":
            return "paused"
        return "up" if self.reachable else "unreachable"


@dataclass(slots=True)
class KeyTruth:
    key: str
    allowed_in_window: int
    limit: int
    window_ms: int


@dataclass(slots=True)
class WorkloadView:
    window_s: float
    offered: int = 0
    allowed: int = 0
    denied: int = 0
    errors: int = 0
    per_target: dict[str, dict[str, Any]] = field(default_factory=dict)
    keys: dict[str, KeyTruth] = field(default_factory=dict)


@dataclass(slots=True)
class RateLimiterState:
    nodes: dict[str, NodeView]
    store: StoreView
    workload: WorkloadView | None
    default_limit: Limit | None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for name, node in self.nodes.items():
            data["nodes"][name]["state"] = node.state
        data["store"]["state"] = self.store.state
        return data

    def limit_for(self, key: str) -> Limit | None:
        return self.store.limits.get(key) or self.default_limit

    def summary(self) -> str:
        nodes = ", ".join(f"{n.name} {n.state}" for n in self.nodes.values())
        text = f"nodes: {nodes}; store {self.store.state}"
        if self.workload is not None:
            w = self.workload
            text += (
                f"; last {w.window_s:.0f} s: {w.offered} offered, {w.allowed} allowed, "
                f"{w.denied} denied, {w.errors} errors"
            )
        return text


def _reason(exc: BaseException) -> tuple[SourceState, str]:
    if isinstance(exc, httpx.TimeoutException | asyncio.TimeoutError | TimeoutError):
        return SourceState.TIMEOUT, f"timed out ({type(exc).__name__})"
    if isinstance(exc, httpx.ConnectError):
        return SourceState.ERROR, "connection refused"
    text = str(exc) or type(exc).__name__
    return SourceState.ERROR, text[:200]


def _parse_limits(raw: Mapping[Any, Any]) -> dict[str, Limit]:
    limits: dict[str, Limit] = {}
    for key, value in raw.items():
        key = key.decode() if isinstance(key, bytes) else str(key)
        try:
            data = json.loads(value) if isinstance(value, str | bytes) else value
            limits[key] = Limit(int(data["limit"]), int(data["window_ms"]))
        except (ValueError, KeyError, TypeError):
            continue
    return limits


def _parse_metrics(
    text: str,
) -> tuple[dict[str, float], float | None, dict[float, float]]:
    """Check counters by result, store errors, and the cumulative latency buckets (le -> n)."""
    checks: dict[str, float] = {}
    store_errors: float | None = None
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "ratelimiter_checks_total":
                result = sample.labels.get("result", "unknown")
                checks[result] = checks.get(result, 0.0) + sample.value
            elif sample.name == "ratelimiter_store_errors_total":
                store_errors = (store_errors or 0.0) + sample.value
            elif sample.name == "ratelimiter_check_latency_seconds_bucket":
                le = float(sample.labels.get("le", "inf"))
                buckets[le] = buckets.get(le, 0.0) + sample.value
    return checks, store_errors, buckets


def bucket_quantile(
    now: dict[float, float], before: dict[float, float], q: float
) -> tuple[float | None, int]:
    """The q-quantile (upper bucket bound, seconds) of what a histogram saw between two scrapes."""
    bounds = sorted(now)
    if not bounds:
        return None, 0
    total = now[bounds[-1]] - before.get(bounds[-1], 0.0)
    if total <= 0:
        return None, 0
    for le in bounds:
        if now[le] - before.get(le, 0.0) >= q * total:
            return le, int(total)
    return bounds[-1], int(total)


class RateLimiterObserver:
    """The ratelimiter Subject: reads every source concurrently with short timeouts."""

    name = "ratelimiter"

    def __init__(
        self,
        nodes: Callable[[], Mapping[str, str]],
        store_url: str,
        *,
        invariants: Sequence[Invariant],
        workload: WorkloadSource | None = None,
        process_status: Callable[[str], str | None] | None = None,
        refresh: Callable[[], Awaitable[None]] | None = None,
        # Longer than a node's own store ping (0.75 s) so that a slow store link shows as a
        # slow health answer, not as the node being down.
        timeout_s: float = 1.0,
        stats_window_s: float = 5.0,
    ) -> None:
        self._nodes = nodes
        self.store_url = store_url
        self.invariants = list(invariants)
        self.workload = workload
        self._process_status = process_status or (lambda _name: None)
        self._refresh = refresh  # reads the process states again (a stack's containers)
        self.timeout_s = timeout_s
        self.stats_window_s = stats_window_s
        self._http = httpx.AsyncClient(timeout=timeout_s)
        self._buckets: dict[str, deque[tuple[float, dict[float, float]]]] = {}
        self._redis = aioredis.Redis.from_url(
            store_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )

    async def close(self) -> None:
        await self._http.aclose()
        await self._redis.aclose()

    def panel(self, observation: Observation) -> ClusterView:
        state = observation.state
        if not isinstance(state, RateLimiterState):
            return ClusterView(rows=(), note=state.summary())
        return cluster_view(state)

    def condition(self, name: str, target: str, observation: Observation) -> Condition | None:
        state = observation.state
        if name != "node_serving" or not isinstance(state, RateLimiterState):
            return None
        node = state.nodes.get(target)
        if node is None:
            return Condition(True, f"{target} is not in this cluster's observation")
        return node_serving(node)

    async def observe(self) -> Observation:
        at = utcnow()
        sources: dict[str, SourceStatus] = {}
        if self._refresh is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REFRESH_TIMEOUT_S):
                    await self._refresh()
        targets = dict(self._nodes())
        node_views = await asyncio.gather(
            *(self._observe_node(name, url, sources) for name, url in targets.items())
        )
        store = await self._observe_store(sources)
        nodes = {view.name: view for view in node_views}
        for view in nodes.values():
            view.registered = view.name in store.registered_nodes if store.reachable else None
        default = next((n.default_limit for n in nodes.values() if n.default_limit), None)
        state = RateLimiterState(nodes=nodes, store=store, workload=None, default_limit=default)
        if self.workload is not None:
            state.workload = await self._observe_workload(state, sources)
            for name in self.workload.drained:
                if name in nodes:
                    nodes[name].drained = True
        return Observation(subject=self.name, at=at, sources=sources, state=state)

    async def _get(self, url: str, timeout: float | None = None) -> tuple[httpx.Response, float]:
        started = time.monotonic()
        response = await self._http.get(url, timeout=timeout or self.timeout_s)
        return response, (time.monotonic() - started) * 1000

    async def _observe_node(
        self, name: str, url: str, sources: dict[str, SourceStatus]
    ) -> NodeView:
        view = NodeView(name=name, url=url, process=self._process_status(name))
        live, health, limits, metrics = await asyncio.gather(
            self._get(f"{url}/api/live", timeout=LIVE_TIMEOUT_S),
            self._get(f"{url}/api/health"),
            self._get(f"{url}/api/limits"),
            self._get(f"{url}/metrics"),
            return_exceptions=True,
        )
        key = f"node:{name}"
        # Alive is answering at all (quickly, without the store); health also pings the store.
        if isinstance(live, BaseException):
            state, reason = _reason(live)
            sources[key] = SourceStatus(key, state, reason)
            view.error = reason
        else:
            view.reachable = True
            sources[key] = SourceStatus(key, SourceState.OK, latency_ms=round(live[1], 2))
        if isinstance(health, BaseException):
            if view.reachable:
                state, reason = _reason(health)
                view.healthy = False
                view.error = f"its health check: {reason}"
                sources[f"health:{name}"] = SourceStatus(f"health:{name}", state, reason)
        else:
            response, latency = health
            try:
                body = response.json()
                view.reachable = True
                view.health_latency_ms = round(latency, 2)
                view.healthy = bool(body.get("ok"))
                store = body.get("store") or {}
                view.store_reachable = store.get("reachable")
                view.store_error = store.get("error")
                view.store_latency_ms = store.get("latency_ms")
                config = body.get("config") or {}
                view.config_version = config.get("version")
                view.config_age_s = config.get("age_s")
                view.config_fresh = config.get("fresh")
                view.config_refresh_s = config.get("refresh_interval_s")
                view.fail_mode = body.get("fail_mode")
                view.failpoints = dict(body.get("failpoints") or {})
                sources[key] = SourceStatus(key, SourceState.OK, latency_ms=round(latency, 2))
            except (ValueError, AttributeError) as exc:
                view.error = f"health answered HTTP {response.status_code} without JSON: {exc}"
                sources[key] = SourceStatus(key, SourceState.ERROR, view.error)
        self._read(f"limits:{name}", limits, sources, lambda r: self._parse_limits_answer(view, r))
        self._read(
            f"metrics:{name}", metrics, sources, lambda r: self._parse_metrics_answer(view, r)
        )
        return view

    @staticmethod
    def _read(
        key: str,
        result: tuple[httpx.Response, float] | BaseException,
        sources: dict[str, SourceStatus],
        parse: Callable[[httpx.Response], None],
    ) -> None:
        """Record one endpoint's answer as a source: failed, malformed, or parsed and ok."""
        if isinstance(result, BaseException):
            state, reason = _reason(result)
            sources[key] = SourceStatus(key, state, reason)
            return
        response, latency = result
        try:
            response.raise_for_status()
            parse(response)
        except (httpx.HTTPStatusError, ValueError, KeyError, TypeError) as exc:
            what = key.partition(":")[0]
            sources[key] = SourceStatus(key, SourceState.ERROR, f"bad {what} answer: {exc}")
            return
        sources[key] = SourceStatus(key, SourceState.OK, latency_ms=round(latency, 2))

    def _parse_limits_answer(self, view: NodeView, response: httpx.Response) -> None:
        body = response.json()
        view.limits = _parse_limits(body.get("limits") or {})
        default = body.get("default") or {}
        view.default_limit = Limit(int(default["limit"]), int(default["window_ms"]))

    def _parse_metrics_answer(self, view: NodeView, response: httpx.Response) -> None:
        view.checks, view.store_errors, buckets = _parse_metrics(response.text)
        self._server_latency(view.name, view, buckets)

    def _server_latency(self, name: str, view: NodeView, buckets: dict[float, float]) -> None:
        if not buckets:
            return
        now = time.monotonic()
        history = self._buckets.setdefault(name, deque())
        history.append((now, buckets))
        while len(history) > 1 and now - history[1][0] >= self.stats_window_s:
            history.popleft()
        before = history[0][1] if len(history) > 1 else {}
        if before and any(buckets.get(le, 0.0) < n for le, n in before.items()):
            history.clear()  # the node restarted: its counters began again
            history.append((now, buckets))
            return
        p99, count = bucket_quantile(buckets, before, 0.99)
        if p99 is not None and count > 0 and math.isfinite(p99):
            view.server_p99_ms = round(p99 * 1000, 1)
        elif p99 is not None and count > 0:
            view.server_p99_ms = math.inf

    async def _observe_store(self, sources: dict[str, SourceStatus]) -> StoreView:
        view = StoreView(url=self.store_url, process=self._process_status("store"))
        started = time.monotonic()
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.ping()
                pipe.get(VERSION_KEY)
                pipe.hgetall(LIMITS_KEY)
                async with asyncio.timeout(STORE_TIMEOUT_S):
                    _, version, limits = await pipe.execute()
            registered = [
                k.decode().removeprefix(NODES_PREFIX)
                async for k in self._redis.scan_iter(match=f"{NODES_PREFIX}*", count=100)
            ]
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            state, reason = _reason(exc)
            sources["store"] = SourceStatus("store", state, reason)
            view.error = reason
            return view
        latency = round((time.monotonic() - started) * 1000, 2)
        view.reachable = True
        view.latency_ms = latency
        view.config_version = int(version) if version is not None else 0
        view.limits = _parse_limits(limits)
        view.registered_nodes = sorted(registered)
        sources["store"] = SourceStatus("store", SourceState.OK, latency_ms=latency)
        return view

    async def _observe_workload(
        self, state: RateLimiterState, sources: dict[str, SourceStatus]
    ) -> WorkloadView | None:
        assert self.workload is not None
        try:
            async with asyncio.timeout(self.timeout_s * 2):
                stats = await self.workload.target_stats(self.stats_window_s)
                windows = {k: v.window_ms / 1000 for k, v in state.store.limits.items()}
                default = state.default_limit
                allowed = await self.workload.allowed(
                    windows, default.window_ms / 1000 if default else 0.0
                )
            view = WorkloadView(window_s=self.stats_window_s)
            for target, s in stats.items():
                view.per_target[target] = {
                    k: s.get(k)
                    for k in ("offered", "allowed", "denied", "errors", "p50_ms", "p99_ms")
                }
                view.offered += int(s.get("offered") or 0)
                view.allowed += int(s.get("allowed") or 0)
                view.denied += int(s.get("denied") or 0)
                view.errors += int(s.get("errors") or 0)
            for key, count in allowed.items():
                limit = state.limit_for(key)
                if limit is None:
                    continue
                view.keys[key] = KeyTruth(key, count, limit.limit, limit.window_ms)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            state_, reason = _reason(exc)
            sources["workload"] = SourceStatus("workload", state_, reason)
            return None
        sources["workload"] = SourceStatus("workload", SourceState.OK)
        return view
