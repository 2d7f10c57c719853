"""Observing a TiKV cluster: one `observe_cluster` through PD each tick (never all of
/regions), the evict-leader list, PD's replication config now and then, and Prometheus."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from operator_console.contract import ClusterView, Condition
from operator_console.domain import Invariant, Observation, SourceState, SourceStatus, utcnow
from operator_console.subjects.tikv.metrics import ClusterMetrics, MetricsReader
from operator_console.subjects.tikv.panel import cluster_view
from operator_console.subjects.tikv.pd import PDClient
from operator_console.subjects.tikv.pd_errors import (
    PDError,
    PDNoLeaderError,
    PDNotLeaderError,
    PDUnavailableError,
)
from operator_console.subjects.tikv.pd_models import PDMember, parse_go_duration
from operator_console.subjects.tikv.prometheus import PrometheusError
from operator_console.subjects.tikv.queries import TargetLabels
from operator_console.subjects.tikv.snapshot import ClusterSnapshot, observe_cluster
from operator_console.subjects.tikv.spec import ThresholdSpec
from operator_console.subjects.tikv.state import (
    CheckView,
    MemberView,
    PDConfigView,
    StoreView,
    TikvState,
    store_target,
    target_id,
)

CONFIG_EVERY_S = 30.0
# The snapshot parts that make up "PD answered the cluster's state".
ESSENTIAL_PARTS = ("members", "stores")


def _host_port(url: str) -> str:
    parts = urlsplit(url if "://" in url else f"http://{url}")
    return f"{(parts.hostname or '').lower()}:{parts.port or ''}"


def is_no_leader(error: BaseException | None) -> bool:
    """PD answered, but has no leader to serve the request (an election, lost quorum)."""
    if isinstance(error, PDNoLeaderError | PDNotLeaderError):
        return True
    if isinstance(error, PDUnavailableError) and error.refusals:
        return all(isinstance(r, PDNoLeaderError | PDNotLeaderError) for r in error.refusals)
    return False


def _reason(exc: BaseException) -> tuple[SourceState, str]:
    text = str(exc) or type(exc).__name__
    timed_out = isinstance(exc, TimeoutError) or "timed out" in text.lower()
    return (SourceState.TIMEOUT if timed_out else SourceState.ERROR), text[:300]


class TikvObserver:
    """The tikv Subject: PD's view of the cluster and, when given, Prometheus's."""

    name = "tikv"

    def __init__(
        self,
        pd: PDClient,
        *,
        invariants: Sequence[Invariant],
        thresholds: ThresholdSpec,
        prometheus: MetricsReader | None = None,
        labels: TargetLabels | None = None,
    ) -> None:
        self.pd = pd
        self.invariants = list(invariants)
        self.thresholds = thresholds
        self.prometheus = prometheus
        self.labels = labels or (prometheus.labels if prometheus else TargetLabels())
        self.last: Observation | None = None
        self._config = PDConfigView()
        self._config_at = -CONFIG_EVERY_S
        self._evicted: list[int] = []

    async def close(self) -> None:
        await self.pd.aclose()
        if self.prometheus is not None:
            await self.prometheus.client.aclose()

    # ---------------------------------------------------------------- observe

    async def observe(self) -> Observation:
        at = utcnow()
        started = time.perf_counter()
        config_due = time.monotonic() - self._config_at >= CONFIG_EVERY_S
        reads: list[Any] = [observe_cluster(self.pd), self.pd.evict_leader_stores()]
        reads.append(self._read_config() if config_due else asyncio.sleep(0))
        reads.append(self.prometheus.read() if self.prometheus else asyncio.sleep(0))
        snapshot, evicted, config, metrics = await asyncio.gather(*reads, return_exceptions=True)
        sources: dict[str, SourceStatus] = {}
        if isinstance(snapshot, BaseException):
            if not isinstance(snapshot, PDError):
                raise snapshot
            state = self._unreached(snapshot, sources)
        else:
            elapsed = round((time.perf_counter() - started) * 1000, 2)
            state = self._state(snapshot, sources, elapsed)
            self._schedulers(evicted, sources)
            if config_due:
                self._note_config(config, sources)
            state.evict_leader_stores = list(self._evicted)
            state.config = self._config
            for view in state.stores.values():
                view.evicted = view.id in self._evicted
        if self.prometheus is not None:
            self._metrics(metrics, state, sources)
        observation = Observation(subject=self.name, at=at, sources=sources, state=state)
        self.last = observation
        return observation

    async def _read_config(self) -> PDConfigView:
        replication, schedule = await asyncio.gather(
            self.pd.replication_config(), self.pd.schedule_config()
        )
        ratio = schedule.get("low-space-ratio")
        limit = schedule.get("leader-schedule-limit")
        return PDConfigView(
            max_replicas=replication.max_replicas,
            max_store_down_time_s=parse_go_duration(schedule.get("max-store-down-time")),
            low_space_ratio=float(ratio) if isinstance(ratio, int | float) else None,
            leader_schedule_limit=limit if isinstance(limit, int) else None,
        )

    def _note_config(self, config: Any, sources: dict[str, SourceStatus]) -> None:
        if isinstance(config, PDConfigView):
            self._config = config
            self._config_at = time.monotonic()
            sources["pd:config"] = SourceStatus("pd:config", SourceState.OK)
        elif isinstance(config, PDError | ValueError):
            sources["pd:config"] = SourceStatus("pd:config", *_reason(config))
        elif isinstance(config, BaseException):
            raise config

    def _schedulers(self, evicted: Any, sources: dict[str, SourceStatus]) -> None:
        if isinstance(evicted, tuple):
            self._evicted = list(evicted)
            sources["pd:schedulers"] = SourceStatus("pd:schedulers", SourceState.OK)
        elif isinstance(evicted, PDError):
            # The last list read stands in; the failed source says it may be stale.
            sources["pd:schedulers"] = SourceStatus("pd:schedulers", *_reason(evicted))
        elif isinstance(evicted, BaseException):
            raise evicted

    def _unreached(self, error: PDError, sources: dict[str, SourceStatus]) -> TikvState:
        state, reason = _reason(error)
        no_leader = is_no_leader(error)
        if no_leader:
            reason = f"PD has no leader: {reason}"
        sources["pd"] = SourceStatus("pd", state, reason)
        return TikvState(
            pd_reached=no_leader,
            answered_by=self.pd.endpoint_in_use,
            answered_member=None,
            answered_role="unknown",
            cluster_id=None,
            leader=None,
            no_leader=no_leader,
            members=[],
            stores={},
            region_count=None,
            checks={},
            evict_leader_stores=list(self._evicted),
            config=self._config,
            prometheus=self.prometheus is not None,
            prometheus_ok=False,
            failures={"pd": reason},
        )

    def _answering(
        self, members: Sequence[PDMember], leader: PDMember | None
    ) -> tuple[str | None, str]:
        """Which listed member the endpoint in use is, and whether it leads."""
        used = _host_port(self.pd.endpoint_in_use)
        for member in members:
            if any(_host_port(url) == used for url in member.client_urls):
                is_leader = leader is not None and member.member_id == leader.member_id
                return member.name, "leader" if is_leader else "follower"
        return None, "unknown"

    def _state(
        self, snap: ClusterSnapshot, sources: dict[str, SourceStatus], elapsed_ms: float
    ) -> TikvState:
        failures = dict(snap.failures)
        no_leader = any(is_no_leader(e) for e in snap.errors.values())
        if "members" not in failures and snap.leader is None:
            no_leader = True  # PD lists its members but none leads
            failures.setdefault("leader", "PD's member list names no leader")
        essential = [failures[p] for p in ESSENTIAL_PARTS if p in failures]
        if essential:
            reason = essential[0][:300]
            sources["pd"] = SourceStatus("pd", SourceState.ERROR, reason)
        else:
            sources["pd"] = SourceStatus("pd", SourceState.OK, latency_ms=elapsed_ms)
        parts = [
            "health",
            "region_stats",
            *(f"check:{k}" for k in snap.checks),
            *(name for name in failures if name.startswith("check:")),
        ]
        for part in dict.fromkeys(parts):
            key = f"pd:{part}"
            if part in failures:
                sources[key] = SourceStatus(
                    key, *_reason(snap.errors.get(part) or RuntimeError(failures[part]))
                )
            else:
                sources[key] = SourceStatus(key, SourceState.OK)
        health = {h.name: h.healthy for h in snap.health}
        member_name, role = self._answering(snap.members, snap.leader)
        members = [
            MemberView(
                name=m.name,
                member_id=m.member_id,
                client_urls=list(m.client_urls),
                leader=snap.leader is not None and m.member_id == snap.leader.member_id,
                healthy=health.get(m.name) if snap.health else None,
                version=m.binary_version,
            )
            for m in snap.members
        ]
        checks = {
            kind: CheckView(
                count=check.count,
                sample=list(check.sample_ids),
                down_by_store=dict(check.down_peers_by_store),
                pending_by_store=dict(check.pending_peers_by_store),
            )
            for kind, check in snap.checks.items()
        }
        down = checks.get("down-peer", CheckView(0)).down_by_store
        pending = checks.get("pending-peer", CheckView(0)).pending_by_store
        stores: dict[str, StoreView] = {}
        for s in snap.stores:
            age = snap.heartbeat_age_s(s)
            stores[store_target(s.id)] = StoreView(
                id=s.id,
                target=store_target(s.id),
                address=s.address,
                status_address=s.status_address,
                version=s.version,
                state_name=s.state_name,
                node_state=s.node_state,
                heartbeat_age_s=round(age, 1) if age is not None else None,
                leaders=s.leader_count,
                regions=s.region_count,
                capacity_bytes=s.capacity_bytes,
                available_bytes=s.available_bytes,
                used_bytes=s.used_bytes,
                leader_weight=s.leader_weight,
                region_weight=s.region_weight,
                slow_score=s.slow_score,
                uptime_s=s.uptime_s,
                down_peers=down.get(s.id, 0),
                pending_peers=pending.get(s.id, 0),
            )
        return TikvState(
            pd_reached=True,
            answered_by=snap.pd_endpoint,
            answered_member=member_name,
            answered_role=role,
            cluster_id=snap.cluster_id,
            leader=snap.leader.name if snap.leader else None,
            no_leader=no_leader,
            members=members,
            stores=stores,
            region_count=snap.region_stats.count if snap.region_stats else None,
            checks=checks,
            evict_leader_stores=[],
            config=self._config,
            prometheus=self.prometheus is not None,
            prometheus_ok=False,
            failures=failures,
            pd_time=snap.pd_time.isoformat() if snap.pd_time else None,
        )

    def _metrics(self, metrics: Any, state: TikvState, sources: dict[str, SourceStatus]) -> None:
        if isinstance(metrics, ClusterMetrics):
            sources["prometheus"] = SourceStatus("prometheus", SourceState.OK)
            state.prometheus_ok = True
            for view in state.stores.values():
                view.metrics = metrics.for_store(self.labels.store_instance(view.status_address))
            for member in state.members:
                member.up = _member_up(member, metrics.up)
        elif isinstance(metrics, PrometheusError | OSError):
            sources["prometheus"] = SourceStatus("prometheus", *_reason(metrics))
            state.failures["prometheus"] = str(metrics)[:300]
        elif isinstance(metrics, BaseException):
            raise metrics

    # ------------------------------------------------------------- the panel

    def panel(self, observation: Observation) -> ClusterView:
        state = observation.state
        if not isinstance(state, TikvState):
            return ClusterView(rows=(), note=state.summary())
        return cluster_view(state, self.thresholds)

    def condition(self, name: str, target: str, observation: Observation) -> Condition | None:
        """`store_slow`: whether the cause a drain hides (a slow store) is still there."""
        state = observation.state
        if name != "store_slow" or not isinstance(state, TikvState):
            return None
        store_id = target_id(target, "store")
        view = state.store(store_id) if store_id is not None else None
        if view is None:
            return Condition(True, f"{target} is not in PD's store list this tick")
        return store_slow(view, list(state.stores.values()), self.thresholds)


def _member_up(member: MemberView, up: dict[str, bool]) -> bool | None:
    """Whether Prometheus scrapes this member: by its client address, or its name as the
    deployment labels it (tidb-operator's pod, tiup's host)."""
    addresses = {_host_port(url) for url in member.client_urls}
    for instance, value in up.items():
        host = instance.rsplit(":", 1)[0]
        if _host_port(instance) in addresses or instance == member.name or host == member.name:
            return value
    return None


# A raft log that takes this many times the other stores' to append or apply is a slow disk.
SLOW_RAFT_FACTOR = 3.0


def raft_slowness(view: StoreView, stores: Sequence[StoreView]) -> tuple[float, str] | None:
    """How many times slower than the other Up stores this store appends or applies its raft
    log (Prometheus p99s), with the figures in words; None without the numbers."""
    mine = view.metrics
    if mine is None:
        return None
    worst: tuple[float, str] | None = None
    for attr, what in (("append_p99_ms", "appends"), ("apply_p99_ms", "applies")):
        value = getattr(mine, attr)
        others = [
            getattr(s.metrics, attr)
            for s in stores
            if s.id != view.id and s.serving and s.metrics and getattr(s.metrics, attr)
        ]
        if value is None or not others:
            continue
        baseline = sorted(others)[len(others) // 2]
        factor = value / baseline if baseline else 0.0
        text = f"{view.target} {what} its raft log in {value:.1f} ms (p99), others {baseline:.1f}"
        if worst is None or factor > worst[0]:
            worst = (factor, text + " ms")
    return worst


def store_slow(view: StoreView, stores: Sequence[StoreView], t: ThresholdSpec) -> Condition:
    """A store is slow while TiKV's own slow score is high or its raft log is far slower
    than the other stores' (what a drain hides, and what must end before undoing it)."""
    if view.slow_score >= t.slow_score:
        return Condition(
            True,
            f"{view.target} reports slow score {view.slow_score} "
            f"(PD calls a store slow from {t.slow_score})",
        )
    slowness = raft_slowness(view, stores)
    if slowness is not None and slowness[0] >= SLOW_RAFT_FACTOR:
        return Condition(True, f"{slowness[1]}: {slowness[0]:.1f}x")
    if slowness is None:
        return Condition(
            False,
            f"{view.target}'s slow score is {view.slow_score} "
            "(no raft latency from Prometheus to compare)",
        )
    return Condition(False, f"{view.target}'s slow score is {view.slow_score} and {slowness[1]}")
