"""The etcd runbook for speed, space and the clients: slow members and lagging followers,
NOSPACE and a database near its quota, latency, errors, lost writes and failing sources."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from operator_console.contract import (
    ActionCatalog,
    Assessment,
    Hypothesis,
    Probe,
    Results,
    TicketContext,
    explain,
    need,
    reject,
)
from operator_console.contract import finding as _f
from operator_console.subjects.etcd.runbook import (
    ALARMS,
    STATUS,
    ElectionsSettled,
    ElectionStalled,
    LeaderOverloaded,
    MemberPartitioned,
    MemberProcessDied,
    MemberProcessPaused,
    MemberUnreachable,
    PeerLinksFailing,
    QuorumMembersDied,
    QuorumMembersPaused,
    QuorumUnreachable,
    RaftSafetyViolated,
    StaleStatusRead,
    _blocked,
    _Hypothesis,
    member_detail,
    member_metrics,
)
from operator_console.subjects.etcd.runbook_checks import (
    AcknowledgedWritesLost,
    CredentialsRefused,
    LedgerRaced,
    SourceFailing,
    SourceRecovered,
)

SLOW_FSYNC_MS = 50.0
FRAGMENTED = 0.5  # in use / file size below this: defragmenting gives the space back


def _best_follower(o: dict[str, Any], leader: str) -> str | None:
    """The follower of `leader` with the fastest quorum reads: where leadership should go."""
    followers = [
        (m.get("quorum_ms") if m.get("quorum_ms") is not None else float("inf"), n)
        for n, m in o["members"].items()
        if n != leader and m["answers"] and m["leader"] == leader and not m["alarms"]
    ]
    return min(followers)[1] if followers else None


# ---------------------------------------------------------------------------- slow_member


class _SlowLeader(_Hypothesis):
    def probes(self, ticket: TicketContext) -> Sequence[Probe]:
        return [member_detail(ticket.target), STATUS, member_metrics(ticket.target)]

    def _leader(self, ticket: TicketContext, results: Results) -> tuple[dict[str, Any], Any]:
        d, o = need(results, member_detail(ticket.target)), need(results, STATUS)
        return d, o


class SlowLeaderLinks(_SlowLeader):
    name = "slow_leader_links"
    description = "the leader's links to its peers are slow, so every commit waits on them"

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        member, probe = ticket.target, member_detail(ticket.target)
        d, o = self._leader(ticket, results)
        if o["leader"] != member:
            return reject(f"{member} no longer leads ({o['leader']} does)")
        quorum = d.get("commit_ms")
        limit = float(ticket.details.get("limit_ms") or 200.0)
        if quorum is None or quorum <= limit:
            return reject(f"a write through {member} waits {quorum} ms on its peers now")
        others = {n: v["quorum_ms"] for n, v in d["others"].items() if v["quorum_ms"] is not None}
        findings = [
            _f(
                f"{member} leads and a quorum read through it takes {quorum:.0f} ms",
                probe,
                quorum_ms=quorum,
            )
        ]
        score = 0.6
        if others and min(others.values()) >= quorum:
            claim = (
                f"reads through the followers are slower still ({others}): each pays its link "
                f"to {member} on top of {member}'s own"
            )
            findings.append(_f(claim, probe, others_quorum_ms=others))
            score += 0.2
        fsync = d.get("wal_fsync_p99_ms")
        if fsync is not None and fsync > SLOW_FSYNC_MS:
            return reject(f"{member}'s WAL fsync p99 is {fsync} ms: its disk explains it better")
        links = d.get("peer_links") or {}
        if links.get("latency_ms"):
            claim = f"the lab's peer proxy of {member} adds {links['latency_ms']:g} ms each way"
            findings.append(_f(claim, probe, peer_links=links))
            score += 0.2
        target = _best_follower(o, member)
        if target is None:
            return _blocked(
                score, findings, f"no healthy follower of {member} to move leadership to"
            )
        why = f"writes stop waiting on {member}'s slow links once {target} leads"
        return self.fix(min(score, 1.0), findings, "move_leader", {"to": target}, why)


class SlowLeaderDisk(_SlowLeader):
    name = "slow_leader_disk"
    description = "the leader's disk is slow (WAL fsync), so every commit waits on it"

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        member, probe = ticket.target, member_detail(ticket.target)
        d, o = self._leader(ticket, results)
        if o["leader"] != member:
            return reject(f"{member} no longer leads ({o['leader']} does)")
        fsync = d.get("wal_fsync_p99_ms")
        if fsync is None or fsync <= SLOW_FSYNC_MS:
            return reject(f"{member}'s WAL fsync p99 is {fsync} ms (fine)")
        findings = [_f(f"{member}'s WAL fsync p99 is {fsync:.0f} ms", probe, fsync_p99_ms=fsync)]
        target = _best_follower(o, member)
        if target is None:
            return _blocked(0.8, findings, f"no healthy follower of {member} to lead instead")
        why = f"{target} leads with a faster disk while {member}'s is looked at"
        return self.fix(0.8, findings, "move_leader", {"to": target}, why)


class LeaderFastAgain(_SlowLeader):
    name = "leader_fast_again"
    description = "the slowness passed: the member no longer leads, or leads fast again"

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        d, o = self._leader(ticket, results)
        quorum = d.get("commit_ms")
        limit = float(ticket.details.get("limit_ms") or 200.0)
        if o["leader"] == ticket.target and (quorum is None or quorum > limit):
            return reject(f"{ticket.target} still leads and is slow ({quorum} ms)")
        claim = f"{o['leader']} leads now; a quorum read through {ticket.target} takes {quorum} ms"
        return explain(0.3, [_f(claim, member_detail(ticket.target), quorum_ms=quorum)])


# ------------------------------------------------------------------------------ apply_lag


class FollowerSlowLink(_Hypothesis):
    name = "follower_slow_link"
    description = "the follower's links are slow: entries reach it late and it applies behind"

    def probes(self, ticket: TicketContext) -> Sequence[Probe]:
        return [member_detail(ticket.target), STATUS]

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        member, probe = ticket.target, member_detail(ticket.target)
        d = need(results, probe)
        lag = d.get("apply_lag") or 0
        if not d["answers"] or lag <= 0:
            return reject(f"{member} is not behind now (apply lag {lag})")
        findings = [
            _f(
                f"{member} applied {d['applied_index']}, {lag} entries behind the leader's "
                f"{d['leader_raft_index']}",
                probe,
                apply_lag=lag,
            )
        ]
        own = (d.get("raft_index") or 0) - (d.get("applied_index") or 0)
        if own > lag / 2:
            return reject(
                f"{member} has the entries ({own} committed, unapplied): its apply is slow"
            )
        quorum, others = d.get("quorum_ms"), d["others"]
        fast = [v["quorum_ms"] for v in others.values() if v["quorum_ms"] is not None]
        score = 0.5
        if quorum is not None and fast and quorum > 3 * max(min(fast), 1.0):
            claim = f"a quorum read through {member} takes {quorum:.0f} ms, others {fast}"
            findings.append(_f(claim, probe, quorum_ms=quorum, others=fast))
            score += 0.3
        links = d.get("peer_links") or {}
        if links.get("latency_ms"):
            claim = f"the lab's peer proxy of {member} adds {links['latency_ms']:g} ms each way"
            findings.append(_f(claim, probe, peer_links=links))
            score += 0.2
        note = f"{member}'s peer network is slow; it catches up once its links are fast again"
        return _blocked(min(score, 1.0), findings, note)


class ApplyStalled(_Hypothesis):
    name = "apply_stalled"
    description = "the member has the entries but applies them slowly (its disk or CPU)"

    def probes(self, ticket: TicketContext) -> Sequence[Probe]:
        return [member_detail(ticket.target)]

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        probe = member_detail(ticket.target)
        d = need(results, probe)
        own = (d.get("raft_index") or 0) - (d.get("applied_index") or 0)
        if own <= 0:
            return reject(f"{ticket.target} applied everything it committed")
        claim = f"{ticket.target} committed {d['raft_index']}, applied {d['applied_index']}"
        findings = [_f(claim, probe, own_lag=own, fsync_p99_ms=d.get("wal_fsync_p99_ms"))]
        return _blocked(0.6, findings, f"{ticket.target}'s disk or CPU must be looked at")


# ---------------------------------------------------------------------------- nospace_alarm


class QuotaExhausted(_Hypothesis):
    name = "quota_exhausted"
    description = "the database passed its quota: old revisions hold the space, NOSPACE is raised"

    def probes(self, ticket: TicketContext) -> Sequence[Probe]:
        return [ALARMS, STATUS]

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        a, o = need(results, ALARMS), need(results, STATUS)
        raised = [x for x in a.get("alarms") or [] if x["alarm"] == "NOSPACE"]
        in_status = {n: v for n, v in (a.get("in_status") or {}).items() if "NOSPACE" in v}
        if not raised and not in_status:
            return reject("no NOSPACE alarm is raised now")
        findings = [
            _f(f"NOSPACE raised: {raised or in_status}", ALARMS, alarms=raised or in_status)
        ]
        members = o["members"].items()
        full = {
            n: f"{m['db_size']}/{m['quota_bytes']}"
            for n, m in members
            if m["db_size"] and m["quota_bytes"] and m["db_size"] >= 0.9 * m["quota_bytes"]
        }
        unknown = sorted(n for n, m in members if not (m["db_size"] and m["quota_bytes"]))
        why = "reclaim the space (compact, defragment each member) and disarm NOSPACE"
        if full:
            findings.append(_f(f"databases at their quota: {full}", STATUS, db=full))
            return self.fix(1.0, findings, "recover_nospace", {}, why)
        if unknown:
            # The alarm is etcd's own word that a database passed its quota; sizes unread.
            claim = f"the database sizes of {', '.join(unknown)} could not be read now"
            findings.append(_f(claim, STATUS, unknown=unknown))
            return self.fix(0.7, findings, "recover_nospace", {}, why)
        return reject("every database is well below its quota: the alarm outlived its cause")


class AlarmLeftRaised(_Hypothesis):
    name = "alarm_left_raised"
    description = "NOSPACE stays raised although the space was reclaimed"

    def probes(self, ticket: TicketContext) -> Sequence[Probe]:
        return [ALARMS, STATUS]

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        a, o = need(results, ALARMS), need(results, STATUS)
        if not any(x["alarm"] == "NOSPACE" for x in a.get("alarms") or []):
            return reject("no NOSPACE alarm in the alarm list")
        ratios = {
            n: round(m["db_size"] / m["quota_bytes"], 2)
            for n, m in o["members"].items()
            if m["db_size"] and m["quota_bytes"]
        }
        if not ratios or max(ratios.values()) >= 0.8:
            return reject(f"a database is still near its quota: {ratios}")
        findings = [_f(f"every database well below its quota: {ratios}", STATUS, ratios=ratios)]
        return self.fix(
            0.9, findings, "disarm_alarm", {"alarm": "NOSPACE"}, "nothing else holds it"
        )


# --------------------------------------------------------------------------- db_near_quota


class DbFragmented(_Hypothesis):
    name = "db_fragmented"
    description = "most of the database file is free pages: defragmenting gives them back"

    def probes(self, ticket: TicketContext) -> Sequence[Probe]:
        return [member_detail(ticket.target)]

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        probe = member_detail(ticket.target)
        d = need(results, probe)
        size, used = d.get("db_size") or 0, d.get("db_size_in_use") or 0
        if not size or used / size >= FRAGMENTED:
            return reject(f"{used} of {size} bytes are in use: there is little to defragment")
        claim = f"{ticket.target}'s database: {size} bytes, only {used} in use"
        findings = [_f(claim, probe, db_size=size, db_size_in_use=used)]
        why = f"defragmenting {ticket.target} shrinks its file to what is in use"
        return self.fix(1.0, findings, "defragment", {"member": ticket.target}, why)


class HistoryHoldsSpace(_Hypothesis):
    name = "history_holds_space"
    description = "old revisions fill the database: it needs compaction, then defragmentation"

    def probes(self, ticket: TicketContext) -> Sequence[Probe]:
        return [member_detail(ticket.target)]

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        probe = member_detail(ticket.target)
        d = need(results, probe)
        size, used = d.get("db_size") or 0, d.get("db_size_in_use") or 0
        if not size or used / size < FRAGMENTED:
            return reject("most of the file is free pages: defragmenting alone gives them back")
        claim = (
            f"{ticket.target}'s database: {used} of {size} bytes in use (revision {d['revision']})"
        )
        findings = [_f(claim, probe, db_size=size, db_size_in_use=used)]
        why = "compact the history, then defragment each member to give the space back"
        return self.fix(0.8, findings, "recover_nospace", {}, why)


# ------------------------------------------------------------------ latency and errors


def _clients(o: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return ((o.get("clients") or {}).get("per_member")) or {}


class SlowFollower(_Hypothesis):
    name = "slow_follower"
    description = "requests through one follower are slow: its links to the leader are slow"

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        o = need(results, STATUS)
        p99 = {n: s["p99_ms"] for n, s in _clients(o).items() if s.get("p99_ms") is not None}
        if len(p99) < 2:
            return reject("the clients saw too few members to compare")
        slow = max(p99, key=lambda n: p99[n])
        rest = [v for n, v in p99.items() if n != slow]
        if slow == o["leader"] or p99[slow] < 3 * max(max(rest), 1.0):
            return reject(f"no single follower stands out: {p99}")
        findings = [_f(f"clients' p99 per member: {p99}", STATUS, p99_ms=p99)]
        quorum = o["members"].get(slow, {}).get("quorum_ms")
        if quorum is not None:
            claim = f"a quorum read through {slow} takes {quorum:.0f} ms"
            findings.append(_f(claim, STATUS, quorum_ms=quorum))
        note = f"{slow}'s peer network is slow: every request through it waits on its link"
        return _blocked(0.8, findings, note)


class SlowLeaderForClients(_Hypothesis):
    name = "slow_leader"
    description = "the leader is slow, so every request waits on it"

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        o = need(results, STATUS)
        leader = o["leader"]
        quorum = (o["members"].get(leader) or {}).get("commit_ms") if leader else None
        if quorum is None or quorum <= 200.0:
            return reject(f"a quorum read through the leader {leader} takes {quorum} ms")
        findings = [_f(f"a quorum read through {leader} takes {quorum:.0f} ms", STATUS, q=quorum)]
        target = _best_follower(o, leader)
        if target is None:
            return _blocked(0.7, findings, f"no healthy follower of {leader}")
        return self.fix(0.7, findings, "move_leader", {"to": target}, f"{target} is faster")


class ClusterOverloaded(_Hypothesis):
    name = "cluster_overloaded"
    description = "every member answers slowly alike: more load than the cluster serves"

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        o = need(results, STATUS)
        p99 = {n: s["p99_ms"] for n, s in _clients(o).items() if s.get("p99_ms") is not None}
        if len(p99) < 2 or min(p99.values()) < 0.5 * max(p99.values()):
            return reject(f"the members differ: {p99}")
        return explain(0.5, [_f(f"clients' p99 alike on every member: {p99}", STATUS, p99=p99)])


class RequestsTimingOut(_Hypothesis):
    name = "requests_timing_out"
    description = "requests time out through some members while the cluster has a leader"

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        o = need(results, STATUS)
        kinds = (o.get("clients") or {}).get("error_kinds") or {}
        if not kinds.get("unavailable"):
            return reject(f"the errors are not timeouts: {kinds}")
        errors = {n: s["errors"] for n, s in _clients(o).items() if s.get("errors")}
        findings = [_f(f"errors by kind {kinds}, by member {errors}", STATUS, kinds=kinds)]
        return _blocked(0.6, findings, "the slow or unreachable members must be looked at")


class WritesRefused(_Hypothesis):
    name = "writes_refused"
    description = "etcd refuses writes (NOSPACE, too many requests, a permission)"

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        o = need(results, STATUS)
        kinds = (o.get("clients") or {}).get("error_kinds") or {}
        refused = {k: v for k, v in kinds.items() if k not in ("unavailable", "overload")}
        if not refused:
            return reject(f"no request was refused by etcd: {kinds}")
        findings = [_f(f"errors etcd answered: {refused}", STATUS, refused=refused)]
        if "nospace" in refused:
            why = "reclaim the space and disarm NOSPACE"
            return self.fix(0.9, findings, "recover_nospace", {}, why)
        return explain(0.5, findings)


RUNBOOK: dict[str, tuple[type[_Hypothesis], ...]] = {
    "member_down": (MemberProcessDied, MemberProcessPaused, MemberUnreachable),
    "quorum_lost": (QuorumMembersDied, QuorumMembersPaused, QuorumUnreachable),
    "no_leader": (MemberPartitioned, ElectionStalled),
    "split_leaders": (RaftSafetyViolated, StaleStatusRead),
    "leader_flapping": (PeerLinksFailing, LeaderOverloaded, ElectionsSettled),
    "nospace_alarm": (QuotaExhausted, AlarmLeftRaised),
    "db_near_quota": (DbFragmented, HistoryHoldsSpace),
    "apply_lag": (FollowerSlowLink, ApplyStalled),
    "slow_member": (SlowLeaderLinks, SlowLeaderDisk, LeaderFastAgain),
    "latency_slo": (SlowFollower, SlowLeaderForClients, ClusterOverloaded),
    "error_rate": (RequestsTimingOut, WritesRefused),
    "lost_writes": (AcknowledgedWritesLost, LedgerRaced),
    "observation_failed": (CredentialsRefused, SourceFailing, SourceRecovered),
}


def hypotheses_for(invariant: str, catalog: ActionCatalog) -> list[Hypothesis]:
    """The runbook's hypotheses for one invariant (none for an invariant it does not know)."""
    return [cls(catalog) for cls in RUNBOOK.get(invariant, ())]
