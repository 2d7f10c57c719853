"""What must hold for a rate limiter cluster; a violation names the node or key and the numbers."""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Any

from operator_console.domain import Invariant, Observation, Severity, Violation
from operator_console.subjects.ratelimiter.observer import NodeView, RateLimiterState


@dataclass(frozen=True, slots=True)
class Thresholds:
    latency_p99_ms: float = 250.0
    error_rate: float = 0.05
    min_requests: int = 10
    # The load generator times responses on its side of the wire, so a window it counts can
    # straddle the store's by a few milliseconds; this much is measurement, not a breach.
    store_ping_ms: float = 100.0
    over_limit_slack_ratio: float = 0.05
    over_limit_slack_min: int = 2


# How much of the SLO the node's own p99 must reach to confirm what the clients measured.
SERVER_AGREES = 0.5


def _state(observation: Observation) -> RateLimiterState | None:
    state = observation.state
    return state if isinstance(state, RateLimiterState) else None


class _Base:
    name = ""
    severity = Severity.WARNING
    grace = 1
    description = ""
    consequence_of: tuple[str, ...] = ()

    def __init__(self, thresholds: Thresholds | None = None) -> None:
        self.thresholds = thresholds or Thresholds()

    def _violation(self, target: str, message: str, **details: Any) -> Violation:
        return Violation(self.name, target, self.severity, message, details)


class NodeDown(_Base):
    name = "node_down"
    severity = Severity.CRITICAL
    grace = 1
    description = "every node answers its health endpoint"

    def check(self, observation: Observation) -> list[Violation]:
        state = _state(observation)
        if state is None:
            return []
        out = []
        for node in state.nodes.values():
            if node.reachable:
                continue
            how = "paused (SIGSTOP)" if node.process == "paused" else node.error or "unreachable"
            out.append(
                self._violation(
                    node.name,
                    f"{node.name} is down: {how} at {node.url}",
                    url=node.url,
                    error=node.error,
                    process=node.process,
                )
            )
        return out


class StoreUnreachable(_Base):
    name = "store_unreachable"
    severity = Severity.CRITICAL
    # At once when the console and a node agree the store is silent; a console alone must see
    # it twice (its own read may have hiccupped).
    grace = 1
    description = "the store answers the console and every node"

    def __init__(self, thresholds: Thresholds | None = None) -> None:
        super().__init__(thresholds)
        self._alone = 0

    def check(self, observation: Observation) -> list[Violation]:
        state = _state(observation)
        if state is None:
            return []
        if not state.store.reachable:
            cut_off = [n.name for n in state.nodes.values() if n.store_reachable is False]
            agreed = bool(cut_off) or not any(n.reachable for n in state.nodes.values())
            self._alone = 0 if agreed else self._alone + 1
            if not agreed and self._alone < 2:
                return []
            return [
                self._violation(
                    "store",
                    f"store {state.store.url} unreachable: {state.store.error}; "
                    f"{len(cut_off)} of {len(state.nodes)} nodes report it unreachable too",
                    error=state.store.error,
                    nodes=cut_off,
                )
            ]
        self._alone = 0
        return [
            self._violation(
                node.name,
                f"{node.name} cannot reach the store ({node.store_error}) "
                "while the store answers the console: the link between them is broken",
                error=node.store_error,
            )
            for node in state.nodes.values()
            # A drained node serves no traffic: its broken link is contained, not an outage.
            if node.reachable and node.store_reachable is False and not node.drained
        ]


class StoreLinkSlow(_Base):
    name = "store_link_slow"
    severity = Severity.WARNING
    grace = 2
    description = "each node reaches the store quickly (its own ping), like the others do"

    def check(self, observation: Observation) -> list[Violation]:
        state = _state(observation)
        if state is None or not state.store.reachable:
            return []
        pings = {
            n.name: n.store_latency_ms
            for n in state.nodes.values()
            if n.reachable and n.store_latency_ms is not None
        }
        out = []
        slow = self.thresholds.store_ping_ms
        for name, ping in pings.items():
            node = state.nodes[name]
            others = [v for k, v in pings.items() if k != name]
            usual = statistics.median(others) if others else 0.0
            # A drained node's slow link is contained (that is what the drain mitigates).
            if ping > slow and ping > 3 * usual and not node.drained:
                out.append(
                    self._violation(
                        name,
                        f"{name} pings the store in {ping:.0f} ms (the other nodes in "
                        f"{usual:.0f} ms; slow above {slow:.0f} ms): its link is slow",
                        store_latency_ms=ping,
                        others_ms=usual,
                    )
                )
        return out


class OverLimit(_Base):
    name = "over_limit"
    severity = Severity.CRITICAL
    grace = 1
    description = "no key is allowed more than its limit in any window (clients' own count)"
    # Nodes fail open without the store; a stale node enforces an old limit.
    consequence_of = ("store_unreachable", "config_drift", "node_down")

    def __init__(self, thresholds: Thresholds | None = None) -> None:
        super().__init__(thresholds)
        self._limits: dict[str, tuple[int, int]] = {}
        self._changed_at: dict[str, float] = {}

    def check(self, observation: Observation) -> list[Violation]:
        state = _state(observation)
        if state is None or state.workload is None:
            return []
        now = time.monotonic()
        out = []
        for truth in state.workload.keys.values():
            current = (truth.limit, truth.window_ms)
            previous = self._limits.get(truth.key)
            self._limits[truth.key] = current
            if previous is not None and previous != current:
                self._changed_at[truth.key] = now
            # Entries admitted under the old limit stay in the window for one window length.
            changed = self._changed_at.get(truth.key)
            if changed is not None and now - changed < truth.window_ms / 1000:
                continue
            t = self.thresholds
            slack = max(t.over_limit_slack_min, math.ceil(truth.limit * t.over_limit_slack_ratio))
            if truth.allowed_in_window > truth.limit + slack:
                out.append(
                    self._violation(
                        truth.key,
                        f"key {truth.key}: {truth.allowed_in_window} requests allowed in the "
                        f"last {truth.window_ms / 1000:g} s window, limit {truth.limit}",
                        allowed=truth.allowed_in_window,
                        limit=truth.limit,
                        window_ms=truth.window_ms,
                    )
                )
        return out


class ConfigDrift(_Base):
    name = "config_drift"
    severity = Severity.WARNING
    # At once when a node's refresh is overdue (its config older than 1.5 refresh intervals);
    # a young config that differs is a refresh under way and must differ three times running.
    grace = 1
    lagging_ticks = 3
    description = "every node runs the store's current limits"
    consequence_of = ("store_unreachable",)

    def __init__(self, thresholds: Thresholds | None = None) -> None:
        super().__init__(thresholds)
        self._differing: dict[str, int] = {}

    def check(self, observation: Observation) -> list[Violation]:
        state = _state(observation)
        if state is None or not state.store.reachable:
            return []
        store_version = state.store.config_version
        out = []
        for node in state.nodes.values():
            if not node.reachable or node.config_version is None:
                continue
            differing = {}
            if node.limits is not None:
                for key, limit in state.store.limits.items():
                    mine = node.limits.get(key) or node.default_limit
                    if mine is None or mine.limit != limit.limit:
                        differing[key] = {
                            "node": mine.limit if mine else None,
                            "store": limit.limit,
                        }
            if node.config_version == store_version and not differing:
                self._differing.pop(node.name, None)
                continue
            times = self._differing[node.name] = self._differing.get(node.name, 0) + 1
            overdue = (
                node.config_age_s is not None
                and node.config_refresh_s is not None
                and node.config_age_s > 1.5 * node.config_refresh_s
            )
            if not overdue and times < self.lagging_ticks:
                continue
            age = f"{node.config_age_s:.1f} s" if node.config_age_s is not None else "unknown"
            keys = ", ".join(
                f"{k} {v['node']} (store {v['store']})" for k, v in sorted(differing.items())
            )
            message = (
                f"{node.name} runs config v{node.config_version}, store has v{store_version} "
                f"(last refresh {age} ago)"
            )
            if keys:
                message += f"; limits differ: {keys}"
            out.append(
                self._violation(
                    node.name,
                    message,
                    node_version=node.config_version,
                    store_version=store_version,
                    config_age_s=node.config_age_s,
                    limits=differing,
                )
            )
        return out


class _ClientSymptom(_Base):
    """A per-node figure from the clients' window (latency, errors) that another ticket may
    already explain: while it does, and for one window after, the figure is not a new fault."""

    def __init__(self, thresholds: Thresholds | None = None) -> None:
        super().__init__(thresholds)
        self._explained_until: dict[str, float] = {}

    def explained(self, state: RateLimiterState, node: NodeView | None) -> bool:
        """True when node_down / store_unreachable carries the ticket for this node."""
        raise NotImplementedError

    def check(self, observation: Observation) -> list[Violation]:
        state = _state(observation)
        if state is None or state.workload is None:
            return []
        now = time.monotonic()
        out = []
        for name, stats in state.workload.per_target.items():
            node = state.nodes.get(name)
            if self.explained(state, node):
                self._explained_until[name] = now + state.workload.window_s
                continue
            if now < self._explained_until.get(name, 0.0):
                continue
            violation = self.judge(name, node, stats, state.workload.window_s)
            if violation is not None:
                out.append(violation)
        return out

    def judge(
        self, name: str, node: NodeView | None, stats: dict[str, Any], window_s: float
    ) -> Violation | None:
        raise NotImplementedError


class LatencySLO(_ClientSymptom):
    name = "latency_slo"
    severity = Severity.WARNING
    grace = 3
    description = "p99 check latency per node stays under the SLO"
    consequence_of = ("store_unreachable", "store_link_slow")

    def explained(self, state: RateLimiterState, node: NodeView | None) -> bool:
        # A node waiting on a dead store, or dead itself, is slow because of that.
        return not state.store.reachable or (node is not None and not node.reachable)

    def judge(
        self, name: str, node: NodeView | None, stats: dict[str, Any], window_s: float
    ) -> Violation | None:
        t = self.thresholds
        p99 = stats.get("p99_ms")
        answered = stats.get("allowed", 0) + stats.get("denied", 0)
        if p99 is None or answered < t.min_requests or p99 <= t.latency_p99_ms:
            return None
        # The clients time requests inside the console's own process; a busy console
        # inflates that figure. The node's own histogram must agree the node is slow.
        server = node.server_p99_ms if node is not None else None
        if server is not None and server < t.latency_p99_ms * SERVER_AGREES:
            return None
        seen = f"; the node itself measures p99 {server:.0f} ms" if server is not None else ""
        return self._violation(
            name,
            f"{name} p99 {p99:.0f} ms over the last {window_s:g} s "
            f"(SLO {t.latency_p99_ms:.0f} ms, {answered} requests){seen}",
            p99_ms=p99,
            server_p99_ms=server,
            slo_ms=t.latency_p99_ms,
        )


class ErrorRate(_ClientSymptom):
    name = "error_rate"
    severity = Severity.WARNING
    grace = 3
    description = "requests that fail (not denials) stay under the error budget per node"
    consequence_of = ("node_down", "store_unreachable")

    def explained(self, state: RateLimiterState, node: NodeView | None) -> bool:
        return node is not None and not node.reachable  # node_down says it

    def judge(
        self, name: str, node: NodeView | None, stats: dict[str, Any], window_s: float
    ) -> Violation | None:
        t = self.thresholds
        errors = stats.get("errors", 0)
        # Requests that finished in the window (answered or failed), not those sent in it,
        # so a rate change never makes the ratio exceed 100%.
        finished = stats.get("allowed", 0) + stats.get("denied", 0) + errors
        if finished < t.min_requests or errors / finished <= t.error_rate:
            return None
        return self._violation(
            name,
            f"{name}: {errors} of {finished} requests failed in the last {window_s:g} s "
            f"({errors / finished:.0%}, budget {t.error_rate:.0%})",
            errors=errors,
            finished=finished,
        )


class ObservationFailed(_Base):
    name = "observation_failed"
    severity = Severity.WARNING
    grace = 3
    description = "every source the console reads keeps answering"

    def check(self, observation: Observation) -> list[Violation]:
        state = _state(observation)
        down = {n.name for n in state.nodes.values() if not n.reachable} if state else set()
        store_down = state is not None and not state.store.reachable
        out = []
        for source in observation.failed_sources:
            kind, _, target = source.name.partition(":")
            if kind == "node" or (target and target in down) or (kind == "store" and store_down):
                continue  # node_down / store_unreachable speak for these
            out.append(
                self._violation(
                    source.name,
                    f"source {source.name} keeps failing: {source.state.value} ({source.reason})",
                    source=source.to_dict(),
                )
            )
        return out


def default_invariants(thresholds: Thresholds | None = None) -> list[Invariant]:
    return [
        cls(thresholds)
        for cls in (
            NodeDown,
            StoreUnreachable,
            StoreLinkSlow,
            OverLimit,
            ConfigDrift,
            LatencySLO,
            ErrorRate,
            ObservationFailed,
        )
    ]
