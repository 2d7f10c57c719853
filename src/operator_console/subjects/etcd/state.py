"""What one observation of an etcd cluster holds: each member as the console read it, the
leader the members agree on, and what the console's own clients saw."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(slots=True)
class MemberView:
    """One member as its status, health, metrics and member list showed it this tick."""

    name: str
    url: str
    process: str | None = None  # running, paused, killed, exited (the lab's processes only)
    answers: bool = False  # any of its endpoints answered
    status_ok: bool = False
    error: str | None = None  # why the status read failed
    error_kind: str | None = None  # refused, timeout, tls, auth, malformed, other
    failed_reads_in_row: int = 0
    member_id: str | None = None  # hex, as etcd's logs write it
    leader_id: str | None = None  # hex; "" when it knows no leader
    leader: str | None = None  # the name of the member it follows
    is_leader: bool = False
    raft_term: int | None = None
    raft_index: int | None = None  # committed
    applied_index: int | None = None
    revision: int | None = None
    db_size: int | None = None
    db_size_in_use: int | None = None
    quota_bytes: int | None = None
    version: str | None = None
    alarms: list[str] = field(default_factory=list)
    status_errors: list[str] = field(default_factory=list)
    status_ms: float | None = None  # how long its status (from memory) took this tick
    health: bool | None = None  # etcd's /health (a quorum read); None: not known
    health_reason: str = ""
    health_ms: float | None = None  # how long the last answered /health took
    health_pending_ms: float | None = None  # a /health still waiting, for this long
    metrics_ok: bool = False
    has_leader: bool | None = None
    leader_changes: float | None = None
    leader_changes_window: float | None = None
    proposals_failed: float | None = None
    proposals_pending: float | None = None
    heartbeat_send_failures: float | None = None
    wal_fsync_p99_ms: float | None = None
    backend_commit_p99_ms: float | None = None
    peer_round_trip_ms: dict[str, float] = field(default_factory=dict)  # by peer name
    peer_sent_failures_growth: dict[str, float] = field(default_factory=dict)  # by peer name
    members_listed: list[str] | None = None  # names in its member list
    apply_lag: int | None = None  # the leader's committed index minus this member's applied

    @property
    def state(self) -> str:
        """One word for the operator: up, down, paused, no-leader, unhealthy."""
        if self.process == "paused":
            return "paused"
        if not self.answers:
            return "down"
        if not self.status_ok:
            return "unreadable"
        if not self.leader_id:
            return "no-leader"
        if self.health is False:
            return "unhealthy"
        return "up"

    @property
    def quorum_ms(self) -> float | None:
        """How much longer a quorum read through this member takes (a pending one counts) than
        its status, answered from memory in the same tick: the time spent waiting on its
        peers, without the console's or the member's own slowness (a busy machine)."""
        values = [v for v in (self.health_ms, self.health_pending_ms) if v is not None]
        if not values:
            return None
        return round(max(0.0, max(values) - (self.status_ms or 0.0)), 1)

    @property
    def commit_ms(self) -> float | None:
        """The same, from the last quorum read through it that succeeded: how long a write
        waits on its peers. A member cut off from them has none (its reads fail or hang),
        so it is never merely slow."""
        if self.health is not True or self.health_ms is None:
            return None
        return round(max(0.0, self.health_ms - (self.status_ms or 0.0)), 1)

    @property
    def db_ratio(self) -> float | None:
        if self.db_size is None or not self.quota_bytes:
            return None
        return self.db_size / self.quota_bytes


@dataclass(slots=True)
class TrafficView:
    """The console's own clients over the last window."""

    window_s: float
    finished: int = 0
    errors: int = 0
    p99_ms: float | None = None
    error_kinds: dict[str, int] = field(default_factory=dict)
    per_member: dict[str, dict[str, Any]] = field(default_factory=dict)
    acknowledged: int = 0


@dataclass(slots=True)
class LedgerView:
    """The last check of the acknowledged writes against a read-back."""

    checked: int
    lost: list[dict[str, Any]]
    age_s: float
    error: str | None = None


@dataclass(slots=True)
class EtcdState:
    members: dict[str, MemberView]
    size: int  # members in the cluster (the endpoints or the member list, whichever is more)
    leader: str | None = None  # the member that leads at the highest term claimed
    term: int | None = None
    claims: list[tuple[str, int]] = field(default_factory=list)  # (member, term) claiming lead
    traffic: TrafficView | None = None
    ledger: LedgerView | None = None

    @property
    def quorum(self) -> int:
        return self.size // 2 + 1

    @property
    def answering(self) -> list[MemberView]:
        return [m for m in self.members.values() if m.status_ok]

    @property
    def following(self) -> list[MemberView]:
        """Answering members that know a leader."""
        return [m for m in self.answering if m.leader_id]

    @property
    def nospace(self) -> list[str]:
        return sorted(m.name for m in self.members.values() if "NOSPACE" in m.alarms)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for name, member in self.members.items():
            data["members"][name]["state"] = member.state
        return data

    def summary(self) -> str:
        members = ", ".join(f"{m.name} {m.state}" for m in self.members.values())
        lead = f"leader {self.leader} (term {self.term})" if self.leader else "no leader"
        text = f"members: {members}; {lead}"
        if self.nospace:
            text += f"; NOSPACE alarm on {', '.join(self.nospace)}"
        if self.traffic is not None:
            t = self.traffic
            p99 = f"{t.p99_ms:.0f} ms" if t.p99_ms is not None else "-"
            text += (
                f"; last {t.window_s:.0f} s: {t.finished} requests, {t.errors} errors, p99 {p99}"
            )
        return text
