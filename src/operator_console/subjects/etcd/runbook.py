"""The etcd runbook for members and raft, as testable hypotheses: each names its probes and
judges their results; it recommends an action only from what the tools showed.

Restraint is part of the runbook: a member cut off from its peers while the others keep a
quorum is diagnosed and handed to a person (its network is the fix), never restarted.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from operator_console.contract import (
    Assessment,
    Finding,
    Probe,
    Results,
    RunbookHypothesis,
    TicketContext,
    Verdict,
    explain,
    need,
    reject,
)
from operator_console.contract import finding as _f

DEAD = ("killed", "exited", "stopped")
LOG_LINES = 60
STATUS = Probe("cluster_status")
ALARMS = Probe("alarms")
# Words etcd logs when it loses its peers (3.4 and 3.5, zap logger).
PARTITION_WORDS = (
    "lost TCP streaming connection",
    "prober detected unhealthy status",
    "failed to dial",
    "lost the TCP streaming connection",
    "is starting a new election",
    "pre-vote",
    "failed to reach the peer URL",
    "peer became inactive",
)


def member_detail(member: str) -> Probe:
    return Probe("member_detail", {"member": member})


def member_metrics(member: str) -> Probe:
    return Probe("member_metrics", {"member": member})


def log_tail(member: str) -> Probe:
    return Probe("tail_log", {"member": member, "lines": LOG_LINES})


class _Hypothesis(RunbookHypothesis):
    default_probes = (STATUS,)


def _log_lines(results: Results, member: str, words: Sequence[str]) -> list[str]:
    log = results.get(log_tail(member))
    if not isinstance(log, dict):
        return []
    return [str(line)[:200] for line in log.get("lines") or [] if any(w in line for w in words)]


def _blocked(score: float, findings: list[Finding], note: str) -> Assessment:
    """Supported by the evidence; the fix is outside what this console can do: a person acts."""
    return Assessment(score=score, findings=findings, blocked=note)


# --------------------------------------------------------------------------- member_down


def _down(ticket: TicketContext, results: Results) -> tuple[dict[str, Any], list[Finding]]:
    member, probe = ticket.target, member_detail(ticket.target)
    d = need(results, probe)
    if d["answers"]:
        raise Verdict(reject(f"{member} answers again ({d['state']})"))
    findings = [_f(f"{member}'s client URL: {d['error']}", probe, error=d["error"])]
    if d.get("process"):
        claim = f"the lab's supervisor reports {member}'s process {d['process']}"
        findings.insert(0, _f(claim, probe, process=d["process"], pid=d.get("pid")))
    return d, findings


class MemberProcessDied(_Hypothesis):
    name = "member_process_died"
    description = "the member's etcd process was killed or crashed, so nothing answers its port"

    def probes(self, ticket: TicketContext) -> Sequence[Probe]:
        return [member_detail(ticket.target), log_tail(ticket.target)]

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        member = ticket.target
        d, findings = _down(ticket, results)
        log = results.get(log_tail(member))
        if isinstance(log, dict) and log.get("lines"):
            last = str(log["lines"][-1])[:200]
            findings.append(_f(f"{member}'s log ends with: {last}", log_tail(member), last=last))
        params = {"member": member}
        if d["process"] in DEAD:
            why = f"{member}'s process is {d['process']}; its data dir is intact, start it again"
            return self.fix(1.0, findings, "restart_member", params, why)
        if d["error_kind"] == "refused" and d["process"] in ("running", None):
            why = f"nothing listens on {member}'s client port: its process is gone or wedged"
            return self.fix(0.8, findings, "restart_member", params, why)
        return reject(f"{member}'s process is {d['process']} and its port: {d['error_kind']}")


class MemberProcessPaused(_Hypothesis):
    name = "member_process_paused"
    description = "the member's process is stopped (SIGSTOP) or hung: its port is open, no answer"

    def probes(self, ticket: TicketContext) -> Sequence[Probe]:
        return [member_detail(ticket.target)]

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        member = ticket.target
        d, findings = _down(ticket, results)
        if d["process"] == "paused":
            why = f"{member} is SIGSTOPped; SIGCONT lets it answer and rejoin"
            return self.fix(1.0, findings, "resume_member", {"member": member}, why)
        if d["process"] == "running" and d["error_kind"] == "timeout":
            why = f"{member} runs but answers nothing: a hung process does not resume, restart it"
            return self.fix(0.6, findings, "restart_member", {"member": member}, why)
        return reject(f"{member}'s process is {d['process']} and its port: {d['error_kind']}")


class MemberUnreachable(_Hypothesis):
    name = "member_unreachable"
    description = "the network between the console and the member fails while it runs"

    def probes(self, ticket: TicketContext) -> Sequence[Probe]:
        return [member_detail(ticket.target)]

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        d, findings = _down(ticket, results)
        if d["process"] in (*DEAD, "paused"):
            return reject(f"{ticket.target}'s process is {d['process']}: no network fault needed")
        if d["error_kind"] != "timeout":
            return reject(
                f"{ticket.target} refuses connections: a timeout would point at a network"
            )
        return explain(0.3, findings)


# --------------------------------------------------------------------------- quorum_lost


def _quorum(results: Results) -> tuple[dict[str, Any], dict[str, dict[str, Any]], list[Finding]]:
    o = need(results, STATUS)
    members = o["members"]
    up = sorted(n for n, m in members.items() if m["answers"])
    if len(up) >= o["quorum"]:
        raise Verdict(reject(f"{len(up)} of {o['size']} members answer: quorum is back"))
    claim = f"only {', '.join(up) or 'no member'} answer of {o['size']}; a quorum is {o['quorum']}"
    return o, members, [_f(claim, STATUS, up=up, quorum=o["quorum"])]


class QuorumMembersDied(_Hypothesis):
    name = "quorum_members_died"
    description = "a majority of the members' processes died, so no write can commit"

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        o, members, findings = _quorum(results)
        dead = sorted(
            n
            for n, m in members.items()
            if not m["answers"] and (m["process"] in DEAD or m["error_kind"] == "refused")
        )
        if not dead:
            return reject("no silent member is dead: they are paused or unreachable")
        claim = f"dead: {', '.join(dead)} ({', '.join(str(members[n]['process']) for n in dead)})"
        findings.append(_f(claim, STATUS, dead=dead))
        missing = o["quorum"] - (
            o["size"] - len([n for n, m in members.items() if not m["answers"]])
        )
        why = (
            f"starting {dead[0]} again brings {missing} of the missing members back; the "
            "member_down tickets bring the rest"
        )
        return self.fix(1.0, findings, "restart_member", {"member": dead[0]}, why)


class QuorumMembersPaused(_Hypothesis):
    name = "quorum_members_paused"
    description = "a majority of the members is paused (SIGSTOP), so no write can commit"

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        _, members, findings = _quorum(results)
        paused = sorted(n for n, m in members.items() if m["process"] == "paused")
        if not paused:
            return reject("no member is paused")
        findings.append(_f(f"paused: {', '.join(paused)}", STATUS, paused=paused))
        why = f"SIGCONT lets {paused[0]} answer and restores a quorum with the others"
        return self.fix(0.9, findings, "resume_member", {"member": paused[0]}, why)


class QuorumUnreachable(_Hypothesis):
    name = "quorum_unreachable"
    description = "a majority of the members cannot be reached although their processes run"

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        _, members, findings = _quorum(results)
        silent = sorted(
            n
            for n, m in members.items()
            if not m["answers"]
            and m["process"] in ("running", None)
            and m["error_kind"] == "timeout"
        )
        if not silent:
            return reject("the silent members are dead or paused, not unreachable")
        findings.append(_f(f"running but silent: {', '.join(silent)}", STATUS, silent=silent))
        return _blocked(0.4, findings, "the members' network must be restored by a person")


# ---------------------------------------------------------------------------- no_leader


class MemberPartitioned(_Hypothesis):
    name = "member_partitioned"
    description = (
        "the member is cut off from its peers: it answers clients but knows no leader, while "
        "the others keep a quorum and a leader without it"
    )

    def probes(self, ticket: TicketContext) -> Sequence[Probe]:
        if ticket.target == "cluster":
            return [STATUS]
        return [member_detail(ticket.target), STATUS, log_tail(ticket.target)]

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        member = ticket.target
        if member == "cluster":
            return reject("no single member is isolated: none of them knows a leader")
        probe = member_detail(member)
        d, o = need(results, probe), need(results, STATUS)
        if not d["answers"]:
            return reject(f"{member} does not answer at all (member_down covers that)")
        if d["leader"]:
            return reject(f"{member} follows {d['leader']} now")
        following = sorted(n for n, v in d["others"].items() if v["leader"])
        if len(following) < o["quorum"]:
            return reject(f"only {len(following)} other members follow a leader: no quorum")
        findings = [
            _f(
                f"{member} answers its clients but knows no leader (status leader 0, "
                f"has_leader={d['has_leader']})",
                probe,
                leader_id=d["leader_id"],
                has_leader=d["has_leader"],
            ),
            _f(
                f"{', '.join(following)} follow {d['cluster_leader']} at term "
                f"{d['cluster_term']}: a quorum without {member}",
                probe,
                following=following,
            ),
        ]
        score = 0.6
        behind = (d.get("leader_raft_index") or 0) - (d.get("raft_index") or 0)
        if behind > 0:
            claim = (
                f"{member}'s raft index {d['raft_index']} is {behind} entries behind the "
                f"leader's {d['leader_raft_index']}: no entries reach it"
            )
            findings.append(_f(claim, probe, raft_index=d["raft_index"], behind=behind))
        failing = {n: v["sent_failures_to_it_growth"] for n, v in d["others"].items()}
        failing = {n: g for n, g in failing.items() if g}
        if failing:
            claim = f"failed peer sends to {member} in the last seconds: {failing}"
            findings.append(_f(claim, probe, sent_failures_to_it=failing))
            score += 0.2
        lines = _log_lines(results, member, PARTITION_WORDS)
        if lines:
            claim = f"{member}'s log: {lines[-1]}"
            findings.append(_f(claim, log_tail(member), lines=lines[-3:]))
            score += 0.1
        links = d.get("peer_links") or {}
        if links.get("partitioned"):
            claim = f"the lab's peer proxy of {member} is cut, both ways"
            findings.append(_f(claim, probe, peer_links=links))
            score += 0.1
        note = (
            f"{member} is cut off from its peers: the fix is the network between it and "
            f"{', '.join(following)}, which no action of this console reaches. The cluster keeps "
            "its quorum and serves writes, so nothing must be restarted; restarting "
            f"{member} would not reconnect it"
        )
        return _blocked(min(score, 1.0), findings, note)


class ElectionStalled(_Hypothesis):
    name = "election_stalled"
    description = "a quorum of members answers but no election completes (their links fail)"

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        o = need(results, STATUS)
        members = o["members"]
        up = [n for n, m in members.items() if m["answers"]]
        if len(up) < o["quorum"]:
            return reject("too few members answer for an election (quorum_lost covers that)")
        leaderless = [n for n in up if not members[n]["leader"]]
        if ticket.target != "cluster" and len(leaderless) < o["quorum"]:
            return reject("the other members follow a leader: the election completed")
        if not leaderless:
            return reject("every answering member follows a leader")
        terms = {n: members[n]["raft_term"] for n in up}
        findings = [
            _f(f"{', '.join(leaderless)} know no leader; terms {terms}", STATUS, terms=terms)
        ]
        return _blocked(0.7, findings, "the links between the members fail: a person must look")


# ------------------------------------------------------------------------ split_leaders


class RaftSafetyViolated(_Hypothesis):
    name = "raft_safety_violated"
    description = "two members lead in the same term: raft's election safety is broken"

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        o = need(results, STATUS)
        leaders = sorted(n for n, m in o["members"].items() if m["is_leader"])
        terms = {n: o["members"][n]["raft_term"] for n in leaders}
        if len(leaders) < 2 or len(set(terms.values())) == len(leaders):
            return reject(f"a fresh look shows leaders {terms or 'none'}: no two in one term")
        findings = [_f(f"{' and '.join(leaders)} both lead: terms {terms}", STATUS, terms=terms)]
        note = (
            "two leaders in one term means etcd can no longer be trusted with writes: stop the "
            "clients, keep every data dir as it is for a post-mortem, and get a person; no "
            "action of this console repairs it"
        )
        return _blocked(1.0, findings, note)


class StaleStatusRead(_Hypothesis):
    name = "stale_status_read"
    description = "the claims came from status reads of a leadership change in flight"

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        o = need(results, STATUS)
        leaders = sorted(n for n, m in o["members"].items() if m["is_leader"])
        if len(leaders) > 1:
            return reject(f"{' and '.join(leaders)} still both claim to lead")
        claim = f"a fresh look shows {leaders[0] if leaders else 'no'} leader at term {o['term']}"
        return explain(0.5, [_f(claim, STATUS, leader=o["leader"], term=o["term"])])


# ---------------------------------------------------------------------- leader_flapping


class PeerLinksFailing(_Hypothesis):
    name = "peer_links_failing"
    description = "the links between members fail, so followers keep electing new leaders"

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        o = need(results, STATUS)
        failing = {
            n: m["peer_sent_failures_growth"]
            for n, m in o["members"].items()
            if m.get("peer_sent_failures_growth")
        }
        changes = {n: m["leader_changes_window"] for n, m in o["members"].items()}
        findings = [
            _f(f"leader changes per member in the window: {changes}", STATUS, changes=changes)
        ]
        if not failing:
            return reject("no member's sends to its peers fail now")
        findings.append(
            _f(f"failed peer sends in the last seconds: {failing}", STATUS, failing=failing)
        )
        return _blocked(0.8, findings, "the peer network fails; a person must look at it")


class LeaderOverloaded(_Hypothesis):
    name = "leader_overloaded"
    description = "a leader misses its heartbeats (slow disk or CPU), so followers time out"

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        o = need(results, STATUS)
        slow = {
            n: m["wal_fsync_p99_ms"]
            for n, m in o["members"].items()
            if (m.get("wal_fsync_p99_ms") or 0) > 100
        }
        if not slow:
            return reject("no member's WAL fsync p99 is over 100 ms")
        findings = [_f(f"WAL fsync p99 over 100 ms on {slow}", STATUS, wal_fsync_p99_ms=slow)]
        return _blocked(0.7, findings, "the members' disks are too slow for raft's timing")


class ElectionsSettled(_Hypothesis):
    name = "elections_settled"
    description = "a burst of elections is over: one leader holds now, the window still counts"

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        o = need(results, STATUS)
        if not o["leader"]:
            return reject("no member leads now")
        followers = [n for n, m in o["members"].items() if m["leader"] == o["leader"]]
        if len(followers) < o["quorum"]:
            return reject(f"only {', '.join(followers)} follow {o['leader']}")
        claim = f"{', '.join(followers)} follow {o['leader']} at term {o['term']}"
        return explain(0.4, [_f(claim, STATUS, leader=o["leader"], term=o["term"])])
