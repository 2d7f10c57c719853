"""What must hold for a TiKV cluster, judged from PD's view and Prometheus's; a violation
names its store, member or region set and carries the numbers.

Symptoms another invariant speaks for are left to it, as PD's own counters do: a Down
store is not also Disconnected, and the down or pending peers of a store that is not Up
are part of that store's ticket, not tickets of their own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from operator_console.domain import Invariant, Observation, Severity, Violation
from operator_console.subjects.tikv.spec import ThresholdSpec
from operator_console.subjects.tikv.state import (
    DISCONNECTED,
    DOWN,
    OFFLINE,
    TOMBSTONE,
    StoreView,
    TikvState,
)

REGIONS = "regions"
PD = "pd"
# Fewer requests than this per second make a p99 of noise, not of service.
MIN_QPS_FOR_P99 = 1.0


def _state(observation: Observation) -> TikvState | None:
    state = observation.state
    return state if isinstance(state, TikvState) else None


def _minutes(seconds: float | None) -> str:
    if seconds is None:
        return "an unknown time"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


class _Base:
    consequence_of: tuple[str, ...] = ()
    name = ""
    severity = Severity.WARNING
    grace = 1
    description = ""

    def __init__(self, thresholds: ThresholdSpec | None = None) -> None:
        self.thresholds = thresholds or ThresholdSpec()

    def _violation(self, target: str, message: str, **details: Any) -> Violation:
        return Violation(self.name, target, self.severity, message, details)

    def check(self, observation: Observation) -> list[Violation]:
        state = _state(observation)
        return [] if state is None or not state.pd_reached else self.judge(state)

    def judge(self, state: TikvState) -> list[Violation]:
        raise NotImplementedError


class StoreDisconnected(_Base):
    name = "store_disconnected"
    severity = Severity.WARNING
    grace = 1
    description = "every store heartbeats to PD at least every 20 s"

    def judge(self, state: TikvState) -> list[Violation]:
        out = []
        for view in state.stores.values():
            if view.state_name in (DOWN, TOMBSTONE):
                continue  # store_down speaks for a Down store; a Tombstone is gone by design
            age = view.heartbeat_age_s
            late = age is not None and age > self.thresholds.heartbeat_s
            if view.state_name != DISCONNECTED and not late:
                continue
            out.append(
                self._violation(
                    view.target,
                    f"{view.target} ({view.address}) has sent PD no heartbeat for "
                    f"{_minutes(age)} (PD: {view.state_name}); "
                    "PD moves its leaders to other stores",
                    store_id=view.id,
                    address=view.address,
                    state_name=view.state_name,
                    heartbeat_age_s=age,
                    heartbeat_limit_s=self.thresholds.heartbeat_s,
                    leaders=view.leaders,
                    regions=view.regions,
                )
            )
        return out


class StoreDown(_Base):
    name = "store_down"
    severity = Severity.CRITICAL
    grace = 1
    description = "no store stays silent past PD's max-store-down-time (PD: Down)"

    def judge(self, state: TikvState) -> list[Violation]:
        limit = state.config.max_store_down_time_s
        out = []
        for view in state.stores.values():
            if view.state_name != DOWN:
                continue
            limit_text = f" (max-store-down-time {_minutes(limit)})" if limit else ""
            out.append(
                self._violation(
                    view.target,
                    f"{view.target} ({view.address}) is Down: no heartbeat for "
                    f"{_minutes(view.heartbeat_age_s)}{limit_text}; "
                    f"{view.down_peers} regions report "
                    f"its peer down and {view.pending_peers} are pending on it",
                    store_id=view.id,
                    address=view.address,
                    heartbeat_age_s=view.heartbeat_age_s,
                    down_peers=view.down_peers,
                    pending_peers=view.pending_peers,
                    regions=view.regions,
                    max_store_down_time_s=limit,
                )
            )
        return out


class StoreOfflineStuck(_Base):
    name = "store_offline_stuck"
    severity = Severity.WARNING
    grace = 1
    description = "a store being removed (Offline) keeps shedding its regions"

    def __init__(
        self, thresholds: ThresholdSpec | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__(thresholds)
        self._clock = clock
        self._progress: dict[int, tuple[int, float]] = {}  # store: (fewest regions, since)

    def judge(self, state: TikvState) -> list[Violation]:
        now = self._clock()
        offline = [v for v in state.stores.values() if v.state_name == OFFLINE]
        self._progress = {k: v for k, v in self._progress.items() if k in {s.id for s in offline}}
        replicas = state.config.max_replicas
        others_up = sum(1 for v in state.stores.values() if v.serving)
        out = []
        for view in offline:
            fewest, since = self._progress.get(view.id, (view.regions, now))
            if view.regions < fewest:
                fewest, since = view.regions, now
            self._progress[view.id] = (fewest, since)
            if view.regions == 0:
                continue
            details = {
                "store_id": view.id,
                "regions": view.regions,
                "up_stores": others_up,
                "max_replicas": replicas,
                "stalled_s": round(now - since, 1),
            }
            if replicas is not None and others_up < replicas:
                out.append(
                    self._violation(
                        view.target,
                        f"{view.target} is being removed but still holds {view.regions} regions, "
                        f"and cannot shed them: only {others_up} other Up stores for "
                        f"max-replicas {replicas}",
                        **details,
                    )
                )
            elif now - since >= self.thresholds.offline_stuck_s:
                out.append(
                    self._violation(
                        view.target,
                        f"{view.target} is being removed but has held {view.regions} regions for "
                        f"{_minutes(now - since)} without shedding any",
                        **details,
                    )
                )
        return out


class RegionsMissPeer(_Base):
    consequence_of = ("store_down", "store_disconnected", "store_offline_stuck")
    name = "regions_miss_peer"
    severity = Severity.WARNING
    grace = 3
    description = "every region has as many peers as max-replicas"

    def judge(self, state: TikvState) -> list[Violation]:
        check = state.checks.get("miss-peer")
        if check is None or check.count == 0:
            return []
        up = sum(1 for v in state.stores.values() if v.serving)
        replicas = state.config.max_replicas
        wanted = f"max-replicas {replicas}" if replicas else "max-replicas"
        sample = ", ".join(str(i) for i in check.sample[:5])
        return [
            self._violation(
                REGIONS,
                f"{check.count} regions have fewer peers than {wanted} (e.g. {sample}); "
                f"{up} stores are Up",
                count=check.count,
                sample=check.sample,
                max_replicas=replicas,
                up_stores=up,
            )
        ]


def _peers_on_serving(
    invariant: _Base, state: TikvState, by_store: Callable[[TikvState], dict[int, int]], what: str
) -> list[Violation]:
    out = []
    for store_id, count in sorted(by_store(state).items()):
        view = state.store(store_id)
        if not count or (view is not None and not view.serving):
            continue  # the store's own ticket (disconnected, down, offline) speaks for them
        target = view.target if view is not None else f"store-{store_id}"
        where = f" ({view.address}, Up)" if view is not None else " (not in PD's store list)"
        out.append(
            invariant._violation(
                target,
                f"{count} regions report their peer on {target}{where} {what}",
                store_id=store_id,
                count=count,
                uptime_s=view.uptime_s if view is not None else None,
            )
        )
    return out


class RegionsDownPeer(_Base):
    consequence_of = ("store_down", "store_disconnected")
    name = "regions_down_peer"
    severity = Severity.WARNING
    grace = 2
    description = "no region reports a peer down on a store that is Up"

    def judge(self, state: TikvState) -> list[Violation]:
        check = state.checks.get("down-peer")
        if check is None or not check.count:
            return []
        return _peers_on_serving(
            self,
            state,
            lambda s: check.down_by_store,
            "down: its leader has not heard from it for max-peer-down-duration",
        )


class RegionsPendingPeer(_Base):
    consequence_of = ("store_down", "store_disconnected", "latency_slo")
    name = "regions_pending_peer"
    severity = Severity.WARNING
    grace = 3
    description = "no region keeps a peer pending (behind on its raft log) on a store that is Up"

    def judge(self, state: TikvState) -> list[Violation]:
        check = state.checks.get("pending-peer")
        if check is None or not check.count:
            return []
        return _peers_on_serving(
            self,
            state,
            lambda s: check.pending_by_store,
            "pending: behind on its raft log, waiting for entries or a snapshot",
        )


class LeaderImbalance(_Base):
    consequence_of = ("store_down", "store_disconnected", "latency_slo")
    name = "leader_imbalance"
    severity = Severity.WARNING
    grace = 5
    description = (
        "leaders are spread over the Up stores as their leader weights ask, and a store whose "
        "leaders are evicted holds none"
    )

    def judge(self, state: TikvState) -> list[Violation]:
        out = []
        for view in state.stores.values():
            if view.evicted and view.leaders > 0:
                out.append(
                    self._violation(
                        view.target,
                        f"{view.target}'s leaders are evicted (evict-leader-scheduler) but it "
                        f"still holds {view.leaders}",
                        store_id=view.id,
                        leaders=view.leaders,
                        evicted=True,
                    )
                )
        eligible = [
            v for v in state.stores.values() if v.serving and not v.evicted and v.leader_weight > 0
        ]
        if len(eligible) < 2:
            return out
        scores = {v.target: v.leaders / v.leader_weight for v in eligible}
        mean = sum(scores.values()) / len(scores)
        spread = max(scores.values()) - min(scores.values())
        t = self.thresholds
        if spread <= max(t.leader_imbalance_min, t.leader_imbalance_ratio * mean):
            return out
        worst = max(eligible, key=lambda v: abs(scores[v.target] - mean))
        counts = {v.target: v.leaders for v in sorted(eligible, key=lambda v: v.id)}
        side = "fewer" if scores[worst.target] < mean else "more"
        listing = ", ".join(f"{k} {n}" for k, n in counts.items())
        out.append(
            self._violation(
                worst.target,
                f"{worst.target} holds {worst.leaders} leaders, far {side} than the Up stores' "
                f"mean of {mean:.0f} per unit of leader weight ({listing})",
                store_id=worst.id,
                leaders=counts,
                mean=round(mean, 1),
                leader_weight=worst.leader_weight,
                slow_score=worst.slow_score,
            )
        )
        return out


class NoPDLeader(_Base):
    name = "no_pd_leader"
    severity = Severity.CRITICAL
    grace = 2
    description = "PD has a leader (without one, no TSO, no scheduling, no metadata writes)"

    def judge(self, state: TikvState) -> list[Violation]:
        if not state.no_leader:
            return []
        said = next(iter(state.failures.values()), "")
        return [
            self._violation(
                PD,
                f"PD has no leader: {said[:200]}" if said else "PD has no leader",
                answered_by=state.answered_by,
                failures=dict(state.failures),
            )
        ]


class PDMemberUnhealthy(_Base):
    name = "pd_member_unhealthy"
    severity = Severity.WARNING
    grace = 2
    description = "every PD member passes PD's own health check"

    def judge(self, state: TikvState) -> list[Violation]:
        return [
            self._violation(
                m.name,
                f"PD member {m.name} ({', '.join(m.client_urls)}) fails PD's health check"
                + (" and Prometheus cannot scrape it" if m.up is False else ""),
                member_id=m.member_id,
                client_urls=m.client_urls,
                scraped=m.up,
            )
            for m in state.members
            if m.healthy is False
        ]


class StoreDiskLow(_Base):
    name = "store_disk_low"
    severity = Severity.WARNING
    grace = 1
    description = "every store has at least 20 % of its disk available"

    def judge(self, state: TikvState) -> list[Violation]:
        floor = self.thresholds.disk_available_ratio
        out = []
        for view in state.stores.values():
            ratio = view.available_ratio
            # A silent store's figures are its last report: its own ticket speaks for it.
            if view.state_name in (DISCONNECTED, DOWN, TOMBSTONE) or ratio is None:
                continue
            if ratio >= floor:
                continue
            out.append(
                self._violation(
                    view.target,
                    f"{view.target} has {ratio:.0%} of its disk available "
                    f"({view.available_bytes} of {view.capacity_bytes} bytes; floor {floor:.0%})",
                    store_id=view.id,
                    available_ratio=round(ratio, 4),
                    available_bytes=view.available_bytes,
                    capacity_bytes=view.capacity_bytes,
                    low_space_ratio=state.config.low_space_ratio,
                    floor=floor,
                )
            )
        return out


def drained(view: StoreView) -> bool:
    """Leaders evicted and none left: the store serves no reads or writes of its own."""
    return view.evicted and view.leaders == 0


class LatencySLO(_Base):
    consequence_of = ("store_down", "store_disconnected", "store_disk_low")
    name = "latency_slo"
    severity = Severity.WARNING
    grace = 3
    description = "each serving store's gRPC p99 (Prometheus, all but GC) stays under the SLO"

    def judge(self, state: TikvState) -> list[Violation]:
        if not state.prometheus_ok:
            return []
        slo = self.thresholds.grpc_p99_ms
        out = []
        for view in state.stores.values():
            m = view.metrics
            if not view.serving or drained(view) or m is None or m.grpc_p99_ms is None:
                continue
            if (m.qps or 0.0) < MIN_QPS_FOR_P99 or m.grpc_p99_ms <= slo:
                continue
            out.append(
                self._violation(
                    view.target,
                    f"{view.target}'s gRPC p99 is {m.grpc_p99_ms:.1f} ms at {m.qps:.0f} requests/s "
                    f"(SLO {slo:.0f} ms)",
                    store_id=view.id,
                    grpc_p99_ms=m.grpc_p99_ms,
                    qps=m.qps,
                    slo_ms=slo,
                    instance=m.instance,
                )
            )
        return out


class ObservationFailed(_Base):
    name = "observation_failed"
    severity = Severity.WARNING
    grace = 3
    description = "every source the console reads (PD's parts, Prometheus) keeps answering"

    def check(self, observation: Observation) -> list[Violation]:
        state = _state(observation)
        no_leader = state is not None and state.no_leader
        pd_failed = not observation.sources.get("pd") or not observation.sources["pd"].ok
        out = []
        for source in observation.failed_sources:
            is_pd = source.name == "pd" or source.name.startswith("pd:")
            if is_pd and no_leader:
                continue  # no_pd_leader speaks for what a leaderless PD cannot answer
            if source.name.startswith("pd:") and pd_failed:
                continue  # the "pd" source speaks for its parts
            out.append(
                self._violation(
                    source.name,
                    f"source {source.name} keeps failing: {source.state.value} ({source.reason})",
                    source=source.to_dict(),
                )
            )
        return out


INVARIANTS = (
    StoreDisconnected,
    StoreDown,
    StoreOfflineStuck,
    RegionsMissPeer,
    RegionsDownPeer,
    RegionsPendingPeer,
    LeaderImbalance,
    NoPDLeader,
    PDMemberUnhealthy,
    StoreDiskLow,
    LatencySLO,
    ObservationFailed,
)


def default_invariants(thresholds: ThresholdSpec | None = None) -> list[Invariant]:
    return [cls(thresholds) for cls in INVARIANTS]


def invariant_names() -> list[str]:
    return [cls.name for cls in INVARIANTS]
