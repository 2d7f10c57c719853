"""Observing etcd: every member's status, /metrics, member list and /health, and the clients.

Status, metrics and the member list are answered from the member's own memory, so they come back
in milliseconds even without a leader. `/health` is a quorum read that can take etcd's own
second when the leader is gone; it runs in the background, so it never holds up the
observation (and with it the detection of a dead member) for longer than the other reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from operator_console.contract import ClusterView, Condition
from operator_console.domain import Invariant, Observation, SourceState, SourceStatus, utcnow
from operator_console.lab.etcd.client import (
    EtcdAuthError,
    EtcdResponseError,
    EtcdUnavailableError,
    Health,
    Member,
    Status,
)
from operator_console.lab.etcd.stats import WindowSummary
from operator_console.subjects.etcd.backend import EtcdBackend
from operator_console.subjects.etcd.metrics import MemberMetrics, MetricsHistory, parse_metrics
from operator_console.subjects.etcd.panel import cluster_view
from operator_console.subjects.etcd.state import EtcdState, LedgerView, MemberView, TrafficView

READ_TIMEOUT_S = 0.8  # status, metrics, member list: local reads
HEALTH_TIMEOUT_S = 2.0  # /health waits on a quorum read
HEALTH_GRACE_S = 0.05  # how long a /health may finish after the local reads did
STATS_WINDOW_S = 5.0
CLIENTS_TIMEOUT_S = 2.0  # the clients process answers from memory, on this machine
FSYNC_WINDOW_S = 10.0
_ALARM = re.compile(r"alarm:\s*([A-Z]+)")


def failure(exc: BaseException) -> tuple[SourceState, str, str]:
    """A failed read as a source state, a short kind and the reason in words."""
    text = (str(exc) or type(exc).__name__)[:240]
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return SourceState.TIMEOUT, "timeout", "timed out"
    if isinstance(exc, EtcdAuthError):
        return SourceState.ERROR, "auth", text
    if isinstance(exc, EtcdResponseError):
        return SourceState.ERROR, "malformed", text
    if isinstance(exc, EtcdUnavailableError):
        if "did not answer" in text:
            return SourceState.TIMEOUT, "timeout", text
        lowered = text.lower()
        if "ssl" in lowered or "certificate" in lowered:
            return SourceState.ERROR, "tls", text
        if "refused" in lowered or not exc.maybe_sent:
            return SourceState.ERROR, "refused", text
        return SourceState.ERROR, "other", text
    return SourceState.ERROR, "other", text


async def _timed_health(client: Any) -> tuple[Health, float]:
    """etcd's /health and how long it took, measured where it ran (not where it was read)."""
    started = time.monotonic()
    health = await client.health(timeout=HEALTH_TIMEOUT_S)
    return health, (time.monotonic() - started) * 1000


@dataclass(slots=True)
class _HealthProbe:
    """One member's /health, run in the background: the last answer and any still waiting."""

    task: asyncio.Task[tuple[Health, float]] | None = None
    started: float = 0.0
    last: Health | None = None
    last_ms: float | None = None
    last_error: BaseException | None = None

    def collect(self) -> None:
        task = self.task
        if task is None or not task.done():
            return
        self.task = None
        if task.cancelled():
            return
        error = task.exception()
        if error is None:
            health, elapsed = task.result()
            self.last, self.last_ms, self.last_error = health, round(elapsed, 1), None
        else:
            self.last, self.last_ms, self.last_error = None, None, error


class EtcdObserver:
    """The etcd Subject: reads every member at once with short timeouts, keeps the scrapes of
    the last minute, and reads the console's own clients and their ledger."""

    name = "etcd"

    def __init__(
        self,
        backend: EtcdBackend,
        *,
        invariants: Sequence[Invariant],
        history_s: float = 60.0,
    ) -> None:
        self.backend = backend
        self.invariants = list(invariants)
        self._history = MetricsHistory(max(history_s, FSYNC_WINDOW_S))
        self._health: dict[str, _HealthProbe] = {}
        self._ids: dict[str, str] = {}  # member ID (hex) -> name, learnt from statuses
        self._failed_in_row: dict[str, int] = {}

    async def close(self) -> None:
        probes = [p.task for p in self._health.values() if p.task is not None]
        for task in probes:
            task.cancel()
        await asyncio.gather(*probes, return_exceptions=True)
        self._health.clear()
        await self.backend.aclose()

    def panel(self, observation: Observation) -> ClusterView:
        state = observation.state
        if not isinstance(state, EtcdState):
            return ClusterView(rows=(), note=state.summary())
        return cluster_view(state)

    def condition(self, name: str, target: str, observation: Observation) -> Condition | None:
        state = observation.state
        if name != "member_slow" or not isinstance(state, EtcdState):
            return None
        member = state.members.get(target)
        if member is None:
            return Condition(True, f"{target} is not in this cluster's observation")
        return member_slow(member)

    # ------------------------------------------------------------------ observing

    async def observe(self, read_timeout_s: float = READ_TIMEOUT_S) -> Observation:
        """One look at every member; an investigation may wait longer than a monitor tick."""
        at = utcnow()
        sources: dict[str, SourceStatus] = {}
        names = self.backend.member_names
        for name in names:
            self._start_health(name)
        traffic = asyncio.create_task(self._read_traffic())
        # The process states (one call to the engine for containers) are read alongside.
        reads, _ = await asyncio.gather(
            asyncio.gather(*(self._read(name, read_timeout_s) for name in names)),
            self.backend.refresh_processes(),
        )
        await self._settle_health(names)
        members = {}
        for name, (status, metrics, listed) in zip(names, reads, strict=True):
            members[name] = self._member(name, status, metrics, listed, sources)
        size = max([len(names)] + [len(m.members_listed or ()) for m in members.values()])
        state = EtcdState(members=members, size=size)
        self._leader(state)
        self._traffic(state, sources, await traffic)
        self._history.forget(set(names))
        return Observation(subject=self.name, at=at, sources=sources, state=state)

    async def _timed(self, call: Any, timeout: float) -> tuple[Any, float]:
        started = time.monotonic()
        async with asyncio.timeout(timeout):
            result = await call
        return result, (time.monotonic() - started) * 1000

    async def _read(self, name: str, timeout: float) -> tuple[Any, Any, Any]:
        client = self.backend.client(name)
        results = await asyncio.gather(
            self._timed(client.status(timeout=timeout), timeout),
            self._timed(client.metrics(timeout=timeout), timeout),
            self._timed(client.member_list(timeout=timeout), timeout),
            return_exceptions=True,
        )
        return results[0], results[1], results[2]

    def _start_health(self, name: str) -> None:
        probe = self._health.setdefault(name, _HealthProbe())
        probe.collect()
        if probe.task is None:
            probe.started = time.monotonic()
            probe.task = asyncio.create_task(
                _timed_health(self.backend.client(name)), name=f"etcd-health-{name}"
            )

    async def _settle_health(self, names: list[str]) -> None:
        pending = [p.task for n in names if (p := self._health[n]).task is not None]
        if pending:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(HEALTH_GRACE_S):
                    await asyncio.wait(pending)
        for name in names:
            self._health[name].collect()

    def _member(
        self,
        name: str,
        status: Any,
        metrics: Any,
        listed: Any,
        sources: dict[str, SourceStatus],
    ) -> MemberView:
        view = MemberView(name=name, url=self.backend.client_url(name))
        view.process = self.backend.process_status(name)
        answered = []
        if isinstance(status, BaseException):
            state, kind, reason = failure(status)
            sources[f"status:{name}"] = SourceStatus(f"status:{name}", state, reason)
            view.error, view.error_kind = reason, kind
        else:
            self._status(view, status[0])
            view.status_ms = round(status[1], 1)
            answered.append(True)
            sources[f"status:{name}"] = SourceStatus(
                f"status:{name}", SourceState.OK, latency_ms=round(status[1], 2)
            )
        if isinstance(metrics, BaseException):
            state, _, reason = failure(metrics)
            sources[f"metrics:{name}"] = SourceStatus(f"metrics:{name}", state, reason)
        else:
            try:
                self._metrics(view, parse_metrics(metrics[0]))
            except (ValueError, KeyError) as exc:
                sources[f"metrics:{name}"] = SourceStatus(
                    f"metrics:{name}", SourceState.ERROR, f"unreadable /metrics: {exc}"
                )
            else:
                answered.append(True)
                sources[f"metrics:{name}"] = SourceStatus(
                    f"metrics:{name}", SourceState.OK, latency_ms=round(metrics[1], 2)
                )
        if isinstance(listed, BaseException):
            state, _, reason = failure(listed)
            sources[f"members:{name}"] = SourceStatus(f"members:{name}", state, reason)
        else:
            found: list[Member] = listed[0]
            view.members_listed = sorted(m.name or m.id_hex for m in found)
            for member in found:
                if member.name in self.backend.member_names:
                    self._ids.setdefault(member.id_hex, member.name)
            answered.append(True)
            sources[f"members:{name}"] = SourceStatus(f"members:{name}", SourceState.OK)
        self._read_health(view, sources)
        if view.health is not None:
            answered.append(True)
        view.answers = bool(answered)
        missed = self._failed_in_row.get(name, 0) + 1 if not view.status_ok else 0
        self._failed_in_row[name] = missed
        view.failed_reads_in_row = missed
        return view

    def _status(self, view: MemberView, status: Status) -> None:
        view.status_ok = True
        view.member_id = f"{status.member_id:x}"
        self._ids[view.member_id] = view.name
        view.leader_id = f"{status.leader:x}" if status.leader else ""
        view.is_leader = status.is_leader
        view.raft_term = status.raft_term
        view.raft_index = status.raft_index
        view.applied_index = status.raft_applied_index
        view.revision = status.revision
        view.db_size = status.db_size
        view.db_size_in_use = status.db_size_in_use
        view.version = status.version or None
        view.status_errors = list(status.errors)
        view.alarms = sorted({m.group(1) for e in status.errors for m in _ALARM.finditer(e)})

    def _metrics(self, view: MemberView, metrics: MemberMetrics) -> None:
        view.metrics_ok = True
        history = self._history
        history.add(view.name, time.monotonic(), metrics)
        has_leader = metrics.get("has_leader")
        view.has_leader = None if has_leader is None else bool(has_leader)
        view.leader_changes = metrics.get("leader_changes")
        view.leader_changes_window = history.growth(view.name, "leader_changes")
        view.proposals_failed = metrics.get("proposals_failed")
        view.proposals_pending = metrics.get("proposals_pending")
        view.heartbeat_send_failures = metrics.get("heartbeat_send_failures")
        quota = metrics.get("quota_bytes")
        view.quota_bytes = int(quota) if quota else None
        view.wal_fsync_p99_ms = history.quantile_ms(view.name, "wal_fsync", 0.99, FSYNC_WINDOW_S)
        view.backend_commit_p99_ms = history.quantile_ms(
            view.name, "backend_commit", 0.99, FSYNC_WINDOW_S
        )
        view.peer_round_trip_ms = {
            self._ids.get(peer, peer): ms for peer, ms in metrics.peer_rtt_ms().items()
        }
        before = history.oldest(view.name, STATS_WINDOW_S)
        if before is not None and before is not metrics:
            view.peer_sent_failures_growth = {
                self._ids.get(peer, peer): value - before.sent_failures.get(peer, 0.0)
                for peer, value in metrics.sent_failures.items()
                if value - before.sent_failures.get(peer, 0.0) > 0
            }

    def _read_health(self, view: MemberView, sources: dict[str, SourceStatus]) -> None:
        probe = self._health[view.name]
        key = f"health:{view.name}"
        pending_ms = (time.monotonic() - probe.started) * 1000 if probe.task else None
        view.health_pending_ms = round(pending_ms, 1) if pending_ms is not None else None
        if probe.last is not None:
            view.health = probe.last.healthy
            view.health_reason = probe.last.reason or ("" if probe.last.healthy else "unhealthy")
            view.health_ms = probe.last_ms
            sources[key] = SourceStatus(key, SourceState.OK, latency_ms=probe.last_ms)
        elif probe.last_error is not None:
            state, _, reason = failure(probe.last_error)
            sources[key] = SourceStatus(key, state, reason)
        if pending_ms is not None and pending_ms > HEALTH_TIMEOUT_S * 1000:
            sources[key] = SourceStatus(key, SourceState.TIMEOUT, "/health did not answer")
        if not view.status_ok:
            view.health = None if probe.last is None else view.health

    def _leader(self, state: EtcdState) -> None:
        """Who leads: the member claiming it at the highest term; lags measured against it."""
        for member in state.members.values():
            if member.leader_id:
                member.leader = self._ids.get(member.leader_id, member.leader_id)
            if member.is_leader and member.raft_term is not None:
                state.claims.append((member.name, member.raft_term))
        if state.claims:
            state.leader, state.term = max(state.claims, key=lambda c: (c[1], c[0]))
        leader = state.members.get(state.leader) if state.leader else None
        if leader is None or leader.raft_index is None:
            return
        for member in state.answering:
            if member.applied_index is not None:
                member.apply_lag = max(0, leader.raft_index - member.applied_index)

    async def _read_traffic(self) -> WindowSummary | BaseException | None:
        """The clients' last few seconds (asked of their process alongside the members)."""
        traffic = self.backend.traffic
        if traffic is None:
            return None
        try:
            async with asyncio.timeout(CLIENTS_TIMEOUT_S):
                return await traffic.window(STATS_WINDOW_S)
        except Exception as exc:
            return exc

    def _traffic(
        self,
        state: EtcdState,
        sources: dict[str, SourceStatus],
        stats: WindowSummary | BaseException | None,
    ) -> None:
        traffic = self.backend.traffic
        if traffic is None:
            return
        if isinstance(stats, BaseException):
            kind, _, reason = failure(stats)
            sources["clients"] = SourceStatus("clients", kind, reason)
            return
        sources["clients"] = SourceStatus("clients", SourceState.OK)
        if stats is not None:
            state.traffic = TrafficView(
                window_s=STATS_WINDOW_S,
                finished=stats.finished,
                errors=stats.errors,
                p99_ms=round(stats.p99_ms, 1) if stats.p99_ms is not None else None,
                error_kinds=dict(stats.error_kinds),
                per_member={n: dict(w) for n, w in sorted(stats.per_member.items())},
                acknowledged=traffic.acknowledged,
            )
        check = traffic.check
        if check is None:
            return
        state.ledger = LedgerView(
            checked=check.checked,
            lost=[w.to_dict() for w in check.lost],
            age_s=round(time.monotonic() - check.at, 1),
            error=check.error,
        )
        if check.error is None:
            sources["ledger"] = SourceStatus("ledger", SourceState.OK)
        else:
            sources["ledger"] = SourceStatus("ledger", SourceState.ERROR, check.error[:200])


def member_slow(member: MemberView, threshold_ms: float = 200.0) -> Condition:
    """Whether a member a mitigation moved leadership away from is still slow: a quorum read
    through it still takes longer than the threshold."""
    if not member.answers:
        return Condition(True, f"{member.name} does not answer: {member.error}")
    quorum = member.commit_ms if member.commit_ms is not None else member.quorum_ms
    if quorum is None:
        return Condition(True, f"{member.name} has not answered /health yet")
    if quorum > threshold_ms:
        return Condition(True, f"a quorum read through {member.name} still takes {quorum:.0f} ms")
    return Condition(False, f"a quorum read through {member.name} takes {quorum:.0f} ms")
