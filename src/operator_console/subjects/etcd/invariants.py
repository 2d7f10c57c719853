"""What must hold for an etcd cluster; a violation names the member (or the cluster) and the
numbers. Symptoms another invariant already explains are left to it, so one fault is one ticket
wherever the evidence allows."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

from operator_console.domain import Invariant, Observation, Severity, Violation
from operator_console.subjects.etcd.spec import ThresholdSpec
from operator_console.subjects.etcd.state import EtcdState, MemberView

CLUSTER = "cluster"
WORKLOAD = "workload"
OBSERVER = "observer"
MIN_REQUESTS = 10
# A p99 of fewer answers is in effect the single slowest one: one stall, not a slow cluster.
MIN_LATENCY_SAMPLES = 100
DEAD = ("killed", "exited", "stopped")


def _state(observation: Observation) -> EtcdState | None:
    state = observation.state
    return state if isinstance(state, EtcdState) else None


def is_down(member: MemberView) -> bool:
    """Nothing of the member answers: its port refuses, or it timed out twice in a row, or its
    process is known dead or stopped. A member that answers but cannot be read (TLS, auth, a
    malformed answer) is not down: observation_failed says so."""
    if member.process == "paused" or member.process in DEAD:
        return True  # the OS says it cannot answer; an answer seen this tick is from before
    if member.answers:
        return False
    if member.error_kind == "refused":
        return True
    return member.error_kind == "timeout" and member.failed_reads_in_row >= 2


def up(state: EtcdState) -> list[MemberView]:
    """Members that are not down (a slow or unreadable one still counts)."""
    return [m for m in state.members.values() if not is_down(m)]


def no_quorum(state: EtcdState) -> bool:
    return len(up(state)) < state.quorum


def disturbed(state: EtcdState, *, slow_leader_ms: float | None = None) -> str | None:
    """Why the clients' symptoms are already explained by another invariant, if they are
    (with `slow_leader_ms`, a slow leader explains latency too)."""
    down = [m.name for m in state.members.values() if is_down(m)]
    if down:
        return f"{', '.join(down)} down"
    if no_quorum(state):
        return "no quorum"
    if not state.following:
        return "no leader"
    lost = [m.name for m in state.answering if not m.leader_id]
    if lost:
        return f"{', '.join(lost)} knows no leader"
    if state.nospace:
        return "NOSPACE alarm"
    if slow_leader_ms is not None and state.leader:
        leader = state.members[state.leader]
        if leader.commit_ms is not None and leader.commit_ms > slow_leader_ms:
            return f"the leader {leader.name} is slow"
    return None


class _Base:
    name = ""
    severity = Severity.WARNING
    # Invariants whose breach explains this one's: a ticket of this kind that opens with one of
    # theirs on the same system joins its incident.
    consequence_of: tuple[str, ...] = ()
    grace = 1
    description = ""

    def __init__(self, thresholds: ThresholdSpec | None = None) -> None:
        self.thresholds = thresholds or ThresholdSpec()

    def _violation(self, target: str, message: str, **details: Any) -> Violation:
        return Violation(self.name, target, self.severity, message, details)

    def check(self, observation: Observation) -> list[Violation]:
        state = _state(observation)
        if state is None:
            return []
        return self.judge(state, observation)

    def judge(self, state: EtcdState, observation: Observation) -> list[Violation]:
        raise NotImplementedError


class MemberDown(_Base):
    name = "member_down"
    severity = Severity.CRITICAL
    description = "every member answers its client URL"

    def judge(self, state: EtcdState, observation: Observation) -> list[Violation]:
        out = []
        for m in state.members.values():
            if not is_down(m):
                continue
            how = f"process {m.process}" if m.process and m.process != "running" else m.error
            out.append(
                self._violation(
                    m.name,
                    f"{m.name} does not answer at {m.url}: {how}",
                    url=m.url,
                    error=m.error,
                    error_kind=m.error_kind,
                    process=m.process,
                )
            )
        return out


class QuorumLost(_Base):
    name = "quorum_lost"
    severity = Severity.CRITICAL
    description = "a majority of the members answers, so writes can commit"

    def judge(self, state: EtcdState, observation: Observation) -> list[Violation]:
        if not no_quorum(state):
            return []
        alive = sorted(m.name for m in up(state))
        down = sorted(set(state.members) - set(alive))
        return [
            self._violation(
                CLUSTER,
                f"only {len(alive)} of {state.size} members answer ({', '.join(alive) or 'none'})"
                f"; a quorum is {state.quorum}: no write can commit",
                up=alive,
                down=down,
                quorum=state.quorum,
            )
        ]


class NoLeader(_Base):
    name = "no_leader"
    consequence_of = ("quorum_lost",)
    severity = Severity.CRITICAL
    grace = 3
    description = "every answering member knows the leader"

    def judge(self, state: EtcdState, observation: Observation) -> list[Violation]:
        if no_quorum(state):
            return []  # quorum_lost carries it
        following = state.following
        if len(state.answering) < state.quorum:
            return []  # too few status answers to say who leads; the sources say why
        if not following:
            terms = {m.name: m.raft_term for m in state.answering}
            return [
                self._violation(
                    CLUSTER,
                    f"no member knows a leader although {len(state.answering)} of {state.size} "
                    "answer: elections are not completing",
                    terms=terms,
                )
            ]
        others = ", ".join(m.name for m in following)
        return [
            self._violation(
                m.name,
                f"{m.name} answers but knows no leader, while {others} follow {state.leader} "
                f"at term {state.term}",
                leader=state.leader,
                term=state.term,
                raft_index=m.raft_index,
                leader_raft_index=state.members[state.leader].raft_index if state.leader else None,
            )
            for m in state.answering
            if not m.leader_id
        ]


class SplitLeaders(_Base):
    name = "split_leaders"
    severity = Severity.CRITICAL
    grace = 2  # a member's status can lag its own raft state for an instant; two looks
    description = "at most one member claims leadership in any raft term (raft's safety)"

    def judge(self, state: EtcdState, observation: Observation) -> list[Violation]:
        by_term: dict[int, set[str]] = defaultdict(set)
        for member, term in state.claims:
            by_term[term].add(member)
        return [
            self._violation(
                CLUSTER,
                f"{' and '.join(sorted(names))} both claim leadership in term {term}",
                term=term,
                leaders=sorted(names),
            )
            for term, names in sorted(by_term.items())
            if len(names) > 1
        ]


class LeaderFlapping(_Base):
    name = "leader_flapping"
    consequence_of = ("member_down", "no_leader")
    description = "the leader changes rarely (fewer than N times in the window)"

    def judge(self, state: EtcdState, observation: Observation) -> list[Violation]:
        seen = {
            m.name: m.leader_changes_window
            for m in state.answering
            if m.leader_changes_window is not None
        }
        if not seen:
            return []
        most = max(seen.values())
        t = self.thresholds
        if most < t.leader_changes:
            return []
        return [
            self._violation(
                CLUSTER,
                f"the leader changed {most:.0f} times in the last {t.flapping_window_s:.0f} s "
                f"(members saw {', '.join(f'{k} {v:.0f}' for k, v in sorted(seen.items()))})",
                changes=seen,
                window_s=t.flapping_window_s,
            )
        ]


class NospaceAlarm(_Base):
    name = "nospace_alarm"
    severity = Severity.CRITICAL
    description = "no member has raised the NOSPACE alarm (which refuses every write)"

    def judge(self, state: EtcdState, observation: Observation) -> list[Violation]:
        raised = state.nospace
        if not raised:
            return []
        sizes = {m.name: m.db_size for m in state.members.values() if m.name in raised}
        return [
            self._violation(
                CLUSTER,
                f"NOSPACE alarm raised on {', '.join(raised)}: the database passed its quota "
                "and etcd refuses every write until space is reclaimed and the alarm disarmed",
                members=raised,
                db_size=sizes,
            )
        ]


class DbNearQuota(_Base):
    name = "db_near_quota"
    grace = 3
    description = "every member's database stays below its quota by a margin"

    def judge(self, state: EtcdState, observation: Observation) -> list[Violation]:
        if state.nospace:
            return []  # nospace_alarm carries it
        limit = self.thresholds.db_quota_ratio
        out = []
        for m in state.answering:
            ratio = m.db_ratio
            if ratio is None or ratio < limit:
                continue
            out.append(
                self._violation(
                    m.name,
                    f"{m.name}'s database is {ratio:.0%} of its quota "
                    f"({m.db_size} of {m.quota_bytes} bytes, {m.db_size_in_use} in use)",
                    db_size=m.db_size,
                    db_size_in_use=m.db_size_in_use,
                    quota_bytes=m.quota_bytes,
                )
            )
        return out


class ApplyLag(_Base):
    name = "apply_lag"
    consequence_of = ("member_down", "slow_member")
    grace = 3
    description = "every member applies what the leader committed within N entries"

    def judge(self, state: EtcdState, observation: Observation) -> list[Violation]:
        limit = self.thresholds.apply_lag_entries
        leader = state.members.get(state.leader) if state.leader else None
        out = []
        for m in state.answering:
            if m.apply_lag is None or m.apply_lag <= limit or not m.leader_id:
                continue  # a member without a leader is no_leader's
            out.append(
                self._violation(
                    m.name,
                    f"{m.name} has applied index {m.applied_index}, {m.apply_lag} entries "
                    f"behind what the leader {state.leader} committed "
                    f"({leader.raft_index if leader else '?'})",
                    apply_lag=m.apply_lag,
                    applied_index=m.applied_index,
                    leader_raft_index=leader.raft_index if leader else None,
                )
            )
        return out


class SlowMember(_Base):
    name = "slow_member"
    grace = 3
    description = (
        "the member every write waits on (the leader) completes a quorum round trip in under N ms"
    )

    def judge(self, state: EtcdState, observation: Observation) -> list[Violation]:
        if not state.leader or no_quorum(state):
            return []
        leader = state.members[state.leader]
        quorum = leader.commit_ms
        limit = self.thresholds.slow_member_ms
        if quorum is None or quorum <= limit:
            return []
        others = {m.name: m.commit_ms for m in state.answering if m.name != leader.name}
        return [
            self._violation(
                leader.name,
                f"{leader.name} leads and a quorum read through it takes {quorum:.0f} ms "
                f"(limit {limit:.0f} ms): every write waits on it",
                quorum_ms=quorum,
                others_quorum_ms=others,
                wal_fsync_p99_ms=leader.wal_fsync_p99_ms,
                limit_ms=limit,
            )
        ]


class _ClientSymptom(_Base):
    """A figure from the console's own clients that another invariant may explain: while it
    does, and for one window after (the window still holds its requests), it is not new."""

    latency = False

    def __init__(self, thresholds: ThresholdSpec | None = None) -> None:
        super().__init__(thresholds)
        self._explained_until = 0.0

    def judge(self, state: EtcdState, observation: Observation) -> list[Violation]:
        traffic = state.traffic
        if traffic is None:
            return []
        now = time.monotonic()
        slow = self.thresholds.slow_member_ms if self.latency else None
        if disturbed(state, slow_leader_ms=slow) is not None:
            self._explained_until = now + traffic.window_s
            return []
        if now < self._explained_until or traffic.finished < MIN_REQUESTS:
            return []
        return self.measure(state)

    def measure(self, state: EtcdState) -> list[Violation]:
        raise NotImplementedError


class LatencySLO(_ClientSymptom):
    name = "latency_slo"
    consequence_of = ("member_down", "quorum_lost", "no_leader", "nospace_alarm", "slow_member")
    grace = 3
    latency = True
    description = "the clients' p99 latency stays under the SLO"

    def measure(self, state: EtcdState) -> list[Violation]:
        traffic = state.traffic
        assert traffic is not None
        slo = self.thresholds.latency_p99_ms
        if traffic.p99_ms is None or traffic.p99_ms <= slo:
            return []
        if traffic.finished - traffic.errors < MIN_LATENCY_SAMPLES:
            return []
        per_member = {n: s.get("p99_ms") for n, s in traffic.per_member.items()}
        return [
            self._violation(
                CLUSTER,
                f"clients' p99 {traffic.p99_ms:.0f} ms over the last {traffic.window_s:g} s "
                f"(SLO {slo:.0f} ms, {traffic.finished} requests); per member: "
                + ", ".join(f"{n} {v:.0f} ms" for n, v in per_member.items() if v is not None),
                p99_ms=traffic.p99_ms,
                slo_ms=slo,
                per_member_p99_ms=per_member,
            )
        ]


class ErrorRate(_ClientSymptom):
    name = "error_rate"
    consequence_of = ("member_down", "quorum_lost", "no_leader", "nospace_alarm", "slow_member")
    grace = 3
    description = "requests that fail stay under the error budget"

    def measure(self, state: EtcdState) -> list[Violation]:
        traffic = state.traffic
        assert traffic is not None
        budget = self.thresholds.error_rate
        share = traffic.errors / traffic.finished
        if share <= budget:
            return []
        return [
            self._violation(
                CLUSTER,
                f"{traffic.errors} of {traffic.finished} requests failed in the last "
                f"{traffic.window_s:g} s ({share:.0%}, budget {budget:.0%}): "
                + ", ".join(f"{k} {v}" for k, v in sorted(traffic.error_kinds.items())),
                errors=traffic.errors,
                finished=traffic.finished,
                error_kinds=traffic.error_kinds,
            )
        ]


class LostWrites(_Base):
    name = "lost_writes"
    severity = Severity.CRITICAL
    description = "every write etcd acknowledged to the clients is still there (ledger check)"

    def judge(self, state: EtcdState, observation: Observation) -> list[Violation]:
        ledger = state.ledger
        if ledger is None or not ledger.lost:
            return []
        first = ledger.lost[0]
        return [
            self._violation(
                WORKLOAD,
                f"{len(ledger.lost)} acknowledged write(s) missing from a linearizable read-back "
                f"of {ledger.checked} keys, e.g. {first['kind']} of {first['key']} at revision "
                f"{first['revision']} (found {first['found_value']!r} at "
                f"{first['found_revision']})",
                lost=ledger.lost[:20],
                checked=ledger.checked,
            )
        ]


class ObservationFailed(_Base):
    name = "observation_failed"
    grace = 3
    description = "every source the console reads keeps answering"

    def judge(self, state: EtcdState, observation: Observation) -> list[Violation]:
        down = {m.name for m in state.members.values() if is_down(m)}
        cluster_bad = no_quorum(state) or not state.following
        failed = observation.failed_sources
        members = set(state.members) - down
        unread = {s.name.partition(":")[2] for s in failed if s.name.startswith("status:")}
        if members and members <= unread:
            # No member's status could be read: one problem (the console's view), not one
            # ticket per endpoint.
            reasons = sorted({s.reason for s in failed if s.name.startswith("status:")})
            return [
                self._violation(
                    OBSERVER,
                    f"no member's status could be read: {'; '.join(reasons)[:300]}",
                    sources=[s.to_dict() for s in failed],
                )
            ]
        out = []
        for source in failed:
            kind, _, target = source.name.partition(":")
            if target in down:
                continue  # member_down speaks for these
            if kind in ("health", "ledger") and cluster_bad:
                continue  # a quorum read without a quorum: quorum_lost / no_leader say it
            out.append(
                self._violation(
                    source.name,
                    f"source {source.name} keeps failing: {source.state.value} ({source.reason})",
                    source=source.to_dict(),
                )
            )
        return out


INVARIANTS: tuple[type[_Base], ...] = (
    QuorumLost,
    MemberDown,
    NoLeader,
    SplitLeaders,
    LeaderFlapping,
    NospaceAlarm,
    DbNearQuota,
    ApplyLag,
    SlowMember,
    LatencySLO,
    ErrorRate,
    LostWrites,
    ObservationFailed,
)


def default_invariants(thresholds: ThresholdSpec | None = None) -> list[Invariant]:
    return [cls(thresholds) for cls in INVARIANTS]
