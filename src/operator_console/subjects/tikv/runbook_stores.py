"""Hypotheses about one store: a dead process, a cut link, a full disk, a slow disk, a
restart still settling. Each reads PD's store list and, when given, Prometheus."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from operator_console.contract import (
    ActionCatalog,
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

STORES = Probe("stores")
TARGETS_UP = Probe("prometheus", {"query": "targets_up"})
DEFAULT_HEARTBEAT_S = 20.0
FULL_DISK_RATIO = 0.05  # under this, TiKV's disk-full protection stops the store's writes
SLOW_SCORE = 80  # PD calls a store slow from this score (core.slowStoreThreshold)
SLOW_RAFT_FACTOR = 3.0
RECENT_START_S = 600.0  # a store up for less than this is still settling after a restart


def store_detail(target: str) -> Probe:
    return Probe("store_detail", {"store": target})


class TikvHypothesis(RunbookHypothesis):
    """A hypothesis that knows whether Prometheus's queries can be probed here."""

    def __init__(self, catalog: ActionCatalog, prometheus: bool = False) -> None:
        super().__init__(catalog)
        self.prometheus = prometheus

    def blocked(self, score: float, findings: list[Finding], why: str) -> Assessment:
        """Supported, and a person must act: nothing this console can do fixes it."""
        return Assessment(score=score, findings=findings, blocked=why)


def scraped(
    ticket: TicketContext, results: Results, detail: dict[str, Any]
) -> tuple[bool | None, Finding | None]:
    """Whether Prometheus still scrapes the store's status port, and the finding saying so."""
    answer = results.get(TARGETS_UP)
    instance = (detail.get("prometheus") or {}).get("instance") or detail.get("status_address")
    if isinstance(answer, dict):
        values = answer.get("values") or {}
        value = (answer.get("stores") or {}).get(ticket.target, values.get(instance))
        if value is not None:
            up = value == 1
            claim = (
                f"Prometheus {'still scrapes' if up else 'cannot scrape'} {ticket.target}'s "
                f"status port ({instance}): up={value:g}"
            )
            return up, _f(claim, TARGETS_UP, instance=instance, up=value)
    return None, None


def _silent(ticket: TicketContext, results: Results) -> tuple[dict[str, Any], list[Finding]]:
    probe = store_detail(ticket.target)
    d = need(results, probe)
    limit = float(ticket.details.get("heartbeat_limit_s") or DEFAULT_HEARTBEAT_S)
    age = d.get("heartbeat_age_s")
    if d["state_name"] in ("Up", "Offline") and age is not None and age <= limit:
        raise Verdict(reject(f"{ticket.target} heartbeats to PD again ({age:.0f} s ago)"))
    shown = f"{age:.0f} s" if age is not None else "an unknown time"
    claim = f"PD has had no heartbeat from {ticket.target} for {shown} (PD: {d['state_name']})"
    return d, [_f(claim, probe, state_name=d["state_name"], heartbeat_age_s=age)]


def _disk_ratio(d: dict[str, Any]) -> float | None:
    ratio = d.get("available_ratio")
    prom = (d.get("prometheus") or {}).get("available_ratio")
    return prom if ratio is None else ratio


class _StoreHypothesis(TikvHypothesis):
    def probes(self, ticket: TicketContext) -> Sequence[Probe]:
        probes = [store_detail(ticket.target)]
        return [*probes, TARGETS_UP] if self.prometheus else probes


class StoreProcessDied(_StoreHypothesis):
    name = "store_process_died"
    description = "the store's TiKV process died, so nothing answers on its ports"

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        d, findings = _silent(ticket, results)
        container = _container_state(d)
        if container == "paused":
            return reject(f"{ticket.target}'s container is paused: its process is there, frozen")
        up, seen = scraped(ticket, results, d)
        if up is True:
            return reject("Prometheus still scrapes its status port: the process runs")
        params = {"store": ticket.target}
        if container in ("killed", "exited", "stopped"):
            claim = f"{ticket.target}'s container is {container}"
            findings.append(_f(claim, store_detail(ticket.target), container=container))
            why = f"{ticket.target}'s TiKV container is {container}: start it again"
            return self.fix(0.95, findings, "restart_store", params, why)
        if up is False and seen is not None:
            findings.append(seen)
            ratio = _disk_ratio(d)
            score = 0.7 if ratio is not None and ratio < FULL_DISK_RATIO else 0.9
            why = f"nothing answers on {ticket.target}'s ports: start its TiKV process again"
            return self.fix(score, findings, "restart_store", params, why)
        why = (
            f"PD hears nothing from {ticket.target}; without Prometheus a dead process and a "
            "cut link look alike, and a dead process is the likelier"
        )
        return self.fix(0.5, findings, "restart_store", params, why)


def _container_state(d: dict[str, Any]) -> str | None:
    """The store's container state, when the console has the stack's containers."""
    container = d.get("container")
    return container.get("state") if isinstance(container, dict) else None


class StoreProcessPaused(_StoreHypothesis):
    name = "store_process_paused"
    description = "the store's container is paused: its process is there but frozen"

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        d, findings = _silent(ticket, results)
        container = _container_state(d)
        if container is None:
            return reject("the console has no container of this store to look at")
        if container != "paused":
            return reject(f"{ticket.target}'s container is {container}, not paused")
        claim = f"{ticket.target}'s container is paused"
        findings.append(_f(claim, store_detail(ticket.target), container=container))
        why = f"{ticket.target}'s container is frozen, not dead: unpause it"
        return self.fix(0.95, findings, "resume_store", {"store": ticket.target}, why)


class NetworkPartition(_StoreHypothesis):
    name = "network_partition"
    description = "a network fault cuts the store off from PD while its process runs"

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        d, findings = _silent(ticket, results)
        up, seen = scraped(ticket, results, d)
        if up is False:
            return reject("Prometheus cannot scrape it either: the process itself is silent")
        if up is None:
            return explain(0.3, findings)
        assert seen is not None
        findings.append(seen)
        return self.blocked(
            0.85,
            findings,
            (
                f"{ticket.target}'s process answers Prometheus but PD has no heartbeat from it: "
                "the link between the store and PD is cut; a person must restore it "
                "(no action of this console reaches the network)"
            ),
        )


class DiskFull(_StoreHypothesis):
    name = "disk_full"
    description = "the store's disk filled up, which stopped it"

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        d, findings = _silent(ticket, results)
        ratio = _disk_ratio(d)
        if ratio is None:
            return reject("no disk figures for it from PD or Prometheus")
        if ratio >= FULL_DISK_RATIO:
            return reject(f"its last report showed {ratio:.0%} of its disk available")
        claim = (
            f"{ticket.target}'s last report had {d['available']} of {d['capacity']} "
            f"available ({ratio:.1%})"
        )
        findings.append(
            _f(
                claim,
                store_detail(ticket.target),
                available_ratio=ratio,
                available=d["available"],
                capacity=d["capacity"],
            )
        )
        return self.blocked(
            1.0,
            findings,
            (
                f"{ticket.target}'s disk is full: free space on it (or give it a bigger disk), "
                "then start its TiKV process again; no action of this console frees disk"
            ),
        )


# --------------------------------------------------------------- slow and settling


def slowness(d: dict[str, Any]) -> tuple[float, str] | None:
    raft = d.get("raft_vs_other_stores")
    if isinstance(raft, dict) and raft.get("times_slower") is not None:
        return float(raft["times_slower"]), str(raft["figures"])
    return None


class SlowStore(TikvHypothesis):
    name = "slow_store"
    description = "the store itself is slow (its disk or raft log), so its leaders serve slowly"

    def probes(self, ticket: TicketContext) -> Sequence[Probe]:
        return [store_detail(ticket.target), STORES]

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        probe = store_detail(ticket.target)
        d = need(results, probe)
        if d["state_name"] != "Up":
            return reject(f"{ticket.target} is {d['state_name']}, not serving")
        findings = []
        if d["slow_score"] >= SLOW_SCORE:
            claim = f"TiKV reports slow score {d['slow_score']} for {ticket.target} (slow from 80)"
            findings.append(_f(claim, probe, slow_score=d["slow_score"]))
        raft = slowness(d)
        if raft is not None and raft[0] >= SLOW_RAFT_FACTOR:
            findings.append(_f(f"{raft[1]}: {raft[0]:.1f}x", probe, raft_vs_other_stores=raft[1]))
        if not findings:
            seen = f" and {raft[1]}" if raft else ""
            return reject(f"its slow score is {d['slow_score']}{seen}: not a slow store")
        leaders = d["leaders"]
        if ticket.invariant == "leader_imbalance":
            claim = f"{ticket.target} holds {leaders} leaders: PD moves leaders off a slow store"
            findings.append(_f(claim, probe, leaders=leaders))
        if d.get("leaders_evicted"):
            return reject(f"{ticket.target}'s leaders are evicted already ({leaders} left)")
        score = 1.0 if len(findings) > 1 or d["slow_score"] >= SLOW_SCORE else 0.8
        why = (
            f"keep every leader off {ticket.target} while it is slow, so clients are served "
            "by the other stores; undo it once the store is fast again"
        )
        return self.fix(score, findings, "drain_store", {"store": ticket.target}, why)


class StoreDraining(TikvHypothesis):
    name = "store_draining"
    description = "the store's leaders are being evicted and are still on their way off it"

    def probes(self, ticket: TicketContext) -> Sequence[Probe]:
        return [store_detail(ticket.target), Probe("schedulers")]

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        d = need(results, store_detail(ticket.target))
        s = need(results, Probe("schedulers"))
        if ticket.target not in s.get("evict_leader_stores", []):
            return reject(f"no evict-leader-scheduler holds leaders off {ticket.target}")
        claims = [
            _f(
                f"the evict-leader-scheduler holds leaders off {ticket.target}",
                Probe("schedulers"),
                evict_leader_stores=s["evict_leader_stores"],
            ),
            _f(
                f"{ticket.target} still holds {d['leaders']} leaders",
                store_detail(ticket.target),
                leaders=d["leaders"],
            ),
        ]
        return explain(0.7, claims)


class StoreRestarted(TikvHypothesis):
    name = "store_restarted"
    description = "the store restarted minutes ago and is still settling (leaders, peers)"

    def probes(self, ticket: TicketContext) -> Sequence[Probe]:
        return [store_detail(ticket.target)]

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        probe = store_detail(ticket.target)
        d = need(results, probe)
        uptime = d.get("uptime_s")
        if d["state_name"] != "Up" or uptime is None or uptime >= RECENT_START_S:
            shown = f"{uptime:.0f} s" if uptime is not None else "unknown"
            return reject(f"{ticket.target} is {d['state_name']} with uptime {shown}")
        claims = [_f(f"{ticket.target} has been up for {uptime:.0f} s", probe, uptime_s=uptime)]
        if d["down_peers"] or d["pending_peers"]:
            claim = (
                f"regions still list {d['down_peers']} down and {d['pending_peers']} "
                f"pending peers on it (from before it came back)"
            )
            claims.append(
                _f(claim, probe, down_peers=d["down_peers"], pending_peers=d["pending_peers"])
            )
        if ticket.invariant == "leader_imbalance":
            claim = f"it holds {d['leaders']} leaders; PD's balance-leader brings them back"
            claims.append(_f(claim, probe, leaders=d["leaders"]))
        return explain(0.8, claims)


class PeersUnreachable(TikvHypothesis):
    name = "peers_unreachable"
    description = "the store answers PD, but the other stores' raft leaders cannot reach it"

    def probes(self, ticket: TicketContext) -> Sequence[Probe]:
        return [store_detail(ticket.target)]

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        probe = store_detail(ticket.target)
        d = need(results, probe)
        uptime = d.get("uptime_s")
        if d["state_name"] != "Up" or not d["down_peers"]:
            return reject(f"{ticket.target} is {d['state_name']} with {d['down_peers']} down peers")
        if uptime is not None and uptime < RECENT_START_S:
            return reject(f"{ticket.target} restarted {uptime:.0f} s ago: its down peers are stale")
        claim = (
            f"{d['down_peers']} regions report {ticket.target}'s peer down while it "
            f"heartbeats to PD ({d['heartbeat_age_s']} s ago)"
        )
        findings = [
            _f(claim, probe, down_peers=d["down_peers"], heartbeat_age_s=d["heartbeat_age_s"])
        ]
        return self.blocked(
            0.6,
            findings,
            (
                f"{ticket.target} reaches PD but not its raft peers: a network fault between the "
                "TiKV stores; a person must restore it"
            ),
        )
