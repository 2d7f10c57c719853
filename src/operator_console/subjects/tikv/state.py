"""The tikv subject's state in one observation: PD's members and stores, the region checks,
and what Prometheus measured per store, named by the targets the console shows."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# PD's own names for a store's state (StoreInfo.state_name).
UP = "Up"
DISCONNECTED = "Disconnected"
DOWN = "Down"
OFFLINE = "Offline"
TOMBSTONE = "Tombstone"


def store_target(store_id: int) -> str:
    return f"store-{store_id}"


def region_target(region_id: int) -> str:
    return f"region-{region_id}"


def target_id(target: str, kind: str) -> int | None:
    """5 from "store-5" (kind "store"), None when the target is not of that kind."""
    prefix = f"{kind}-"
    if target.startswith(prefix) and target[len(prefix) :].isdigit():
        return int(target[len(prefix) :])
    return None


@dataclass(slots=True)
class StoreMetrics:
    """One TiKV as Prometheus saw it over the query window (None: no series for it)."""

    instance: str
    up: bool | None = None
    qps: float | None = None
    grpc_p99_ms: float | None = None
    apply_p99_ms: float | None = None
    append_p99_ms: float | None = None
    available_ratio: float | None = None
    used_bytes: float | None = None  # tikv_store_size_bytes, as TiKV itself reports its disk
    capacity_bytes: float | None = None


@dataclass(slots=True)
class StoreView:
    id: int
    target: str
    address: str
    status_address: str
    version: str
    state_name: str
    node_state: str
    heartbeat_age_s: float | None
    leaders: int
    regions: int
    capacity_bytes: int | None
    available_bytes: int | None
    used_bytes: int | None
    leader_weight: float
    region_weight: float
    slow_score: int
    uptime_s: float | None
    evicted: bool = False  # an evict-leader-scheduler holds leaders off it
    down_peers: int = 0  # among the regions PD's down-peer check lists
    pending_peers: int = 0
    metrics: StoreMetrics | None = None

    @property
    def available_ratio(self) -> float | None:
        if not self.capacity_bytes or self.available_bytes is None:
            return None
        return self.available_bytes / self.capacity_bytes

    @property
    def serving(self) -> bool:
        """Up in PD's eyes (heartbeating and not being removed)."""
        return self.state_name == UP


@dataclass(slots=True)
class MemberView:
    name: str
    member_id: int
    client_urls: list[str]
    leader: bool
    healthy: bool | None  # None: PD's health check did not answer
    version: str = ""
    up: bool | None = None  # Prometheus could scrape it


@dataclass(slots=True)
class CheckView:
    """One of PD's region checks: how many regions, a sample of ids, peers per store."""

    count: int
    sample: list[int] = field(default_factory=list)
    down_by_store: dict[int, int] = field(default_factory=dict)
    pending_by_store: dict[int, int] = field(default_factory=dict)


@dataclass(slots=True)
class PDConfigView:
    max_replicas: int | None = None
    max_store_down_time_s: float | None = None
    low_space_ratio: float | None = None
    leader_schedule_limit: int | None = None


@dataclass(slots=True)
class TikvState:
    pd_reached: bool
    answered_by: str  # the PD endpoint that answered
    answered_member: str | None  # which member that endpoint is, when PD lists it
    answered_role: str  # leader, follower, or unknown (an address PD does not list)
    cluster_id: int | None
    leader: str | None
    no_leader: bool  # PD answered that it has no leader (an election)
    members: list[MemberView]
    stores: dict[str, StoreView]
    region_count: int | None
    checks: dict[str, CheckView]
    evict_leader_stores: list[int]
    config: PDConfigView
    prometheus: bool  # a Prometheus was given
    prometheus_ok: bool
    failures: dict[str, str] = field(default_factory=dict)
    pd_time: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def store(self, store_id: int) -> StoreView | None:
        return self.stores.get(store_target(store_id))

    def member(self, name: str) -> MemberView | None:
        return next((m for m in self.members if m.name == name), None)

    def check_count(self, kind: str) -> int:
        check = self.checks.get(kind)
        return check.count if check else 0

    def summary(self) -> str:
        if not self.pd_reached:
            return f"PD at {self.answered_by} does not answer"
        by_state: dict[str, list[str]] = {}
        for view in self.stores.values():
            by_state.setdefault(view.state_name, []).append(view.target)
        stores = ", ".join(
            f"{len(names)} {state}" + ("" if state == UP else f" ({', '.join(names)})")
            for state, names in sorted(by_state.items(), key=lambda kv: kv[0] != UP)
        )
        leader = self.leader or ("none (election)" if self.no_leader else "unknown")
        role = self.answered_member or self.answered_by
        text = f"stores: {stores or 'none read'}; PD leader {leader} (answered by {role}"
        text += f", {self.answered_role})"
        if self.region_count is not None:
            text += f"; {self.region_count} regions"
        flagged = [
            f"{self.check_count(k)} {k}"
            for k in ("miss-peer", "down-peer", "pending-peer", "offline-peer")
            if self.check_count(k)
        ]
        if flagged:
            text += " (" + ", ".join(flagged) + ")"
        unhealthy = [m.name for m in self.members if m.healthy is False]
        if unhealthy:
            text += f"; PD members unhealthy: {', '.join(unhealthy)}"
        return text
