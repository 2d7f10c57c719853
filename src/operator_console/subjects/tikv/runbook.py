"""The TiKV runbook as testable hypotheses, per invariant: what each names as evidence (tool
calls) and how it judges it. Store-level hypotheses are in runbook_stores."""

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
    Verdict,
    explain,
    need,
    reject,
)
from operator_console.contract import finding as _f
from operator_console.subjects.tikv.runbook_stores import (
    STORES,
    DiskFull,
    NetworkPartition,
    PeersUnreachable,
    SlowStore,
    StoreDraining,
    StoreProcessDied,
    StoreProcessPaused,
    StoreRestarted,
    TikvHypothesis,
    store_detail,
)

MEMBERS = Probe("pd_members")
CONFIG = Probe("pd_config")
OPERATORS = Probe("operators")
MISS_PEER = Probe("region_check", {"kind": "miss-peer"})
PD_UP = Probe("prometheus", {"query": "targets_up"})


def _up_stores(stores: dict[str, Any], but: str | None = None) -> list[str]:
    return [s["store"] for s in stores["stores"] if s["state_name"] == "Up" and s["store"] != but]


# ------------------------------------------------------------- replicas and removal


class NoRoomForReplicas(TikvHypothesis):
    name = "no_room_for_replicas"
    description = "fewer Up stores than max-replicas: PD has nowhere to put the missing replicas"

    def probes(self, ticket: TicketContext) -> Sequence[Probe]:
        first = [MISS_PEER] if ticket.invariant == "regions_miss_peer" else []
        return [*first, STORES, CONFIG]

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        stores, config = need(results, STORES), need(results, CONFIG)
        replicas = config.get("max_replicas")
        leaving = ticket.target if ticket.invariant == "store_offline_stuck" else None
        up = _up_stores(stores, but=leaving)
        if not isinstance(replicas, int) or len(up) >= replicas:
            return reject(f"{len(up)} Up stores can hold max-replicas {replicas}")
        findings = [
            _f(f"max-replicas is {replicas}", CONFIG, max_replicas=replicas),
            _f(f"only {len(up)} stores are Up ({', '.join(up)})", STORES, up=up),
        ]
        check = results.get(MISS_PEER)
        if isinstance(check, dict) and check.get("count"):
            sample = [r["region"] for r in check.get("sample", [])][:5]
            findings.insert(
                0,
                _f(
                    f"{check['count']} regions miss a peer, e.g. {', '.join(sample)}",
                    MISS_PEER,
                    count=check["count"],
                ),
            )
        if leaving:
            why = (
                f"{leaving} cannot be removed: PD needs {replicas} other Up stores for its "
                f"replicas and has {len(up)}; add a store, or cancel the removal"
            )
        else:
            why = (
                f"the missing replicas cannot be made up: PD needs {replicas} Up stores and "
                f"has {len(up)}; bring the lost store back or add one"
            )
        return self.blocked(0.9, findings, why + " (no action of this console adds a store)")


class ReplicasBeingAdded(TikvHypothesis):
    name = "replicas_being_added"
    description = "PD is already adding the missing replicas (operators are running)"

    def probes(self, ticket: TicketContext) -> Sequence[Probe]:
        return [OPERATORS]

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        ops = need(results, OPERATORS)
        moving = [
            o
            for o in ops["operators"]
            if any(k in ("region", "replica") for k in o["kinds"])
            and "remove" not in o["desc"]
            and not o["finished"]
        ]
        if not moving:
            return reject("no pending operator adds or moves a replica")
        claim = (
            f"{len(moving)} operators add or move replicas: {moving[0]['desc']} on "
            f"{moving[0]['region']}"
        )
        return explain(0.6, [_f(claim, OPERATORS, operators=[o["desc"] for o in moving])])


# ------------------------------------------------------------------- PD members


def _member(results: Results, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    members = need(results, MEMBERS)
    found = next((m for m in members["members"] if m["name"] == name), None)
    if found is None:
        raise Verdict(reject(f"PD does not list a member {name} now"))
    return members, found


class PDMemberDown(TikvHypothesis):
    name = "pd_member_down"
    description = "the PD member's process is down: its peers' health check and Prometheus fail"

    def probes(self, ticket: TicketContext) -> Sequence[Probe]:
        return [MEMBERS]

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        members, m = _member(results, ticket.target)
        if m["healthy"] is not False:
            return reject(f"{ticket.target} passes PD's health check now")
        findings = [
            _f(
                f"PD's health check fails for {ticket.target}",
                MEMBERS,
                member=ticket.target,
                healthy=False,
            )
        ]
        if m["prometheus_scrapes_it"] is True:
            return reject("Prometheus still scrapes it: the process runs")
        if m["prometheus_scrapes_it"] is False:
            findings.append(
                _f(
                    f"Prometheus cannot scrape {ticket.target} either",
                    MEMBERS,
                    prometheus_scrapes_it=False,
                )
            )
        score = 0.9 if m["prometheus_scrapes_it"] is False else 0.6
        leader = members.get("leader")
        if leader:
            findings.append(_f(f"{leader} still leads PD", MEMBERS, leader=leader))
        why = f"start {ticket.target}'s PD process again so PD keeps its quorum margin"
        return self.fix(score, findings, "restart_pd_member", {"member": ticket.target}, why)


class PDMemberPartitioned(TikvHypothesis):
    name = "pd_member_partitioned"
    description = "the PD member runs but its peers cannot reach it (a network fault)"

    def probes(self, ticket: TicketContext) -> Sequence[Probe]:
        return [MEMBERS]

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        _, m = _member(results, ticket.target)
        if m["healthy"] is not False or m["prometheus_scrapes_it"] is not True:
            return reject(
                f"{ticket.target}: healthy={m['healthy']}, "
                f"scraped by Prometheus={m['prometheus_scrapes_it']}"
            )
        findings = [
            _f(
                f"{ticket.target} fails PD's health check but Prometheus scrapes it",
                MEMBERS,
                healthy=False,
                prometheus_scrapes_it=True,
            )
        ]
        return self.blocked(
            0.8,
            findings,
            (
                f"{ticket.target} runs but its PD peers cannot reach it: restore the network "
                "between the PD members"
            ),
        )


class PDQuorumLost(TikvHypothesis):
    name = "pd_quorum_lost"
    description = "a majority of PD members is down, so PD cannot elect a leader"

    def probes(self, ticket: TicketContext) -> Sequence[Probe]:
        return [MEMBERS]

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        members = need(results, MEMBERS)
        listed = members["members"]
        down = [m["name"] for m in listed if m["healthy"] is False]
        if not listed or len(down) * 2 < len(listed):
            return reject(f"{len(down)} of {len(listed)} PD members fail their health check")
        findings = [
            _f(
                f"{len(down)} of {len(listed)} PD members are unhealthy: {', '.join(down)}",
                MEMBERS,
                unhealthy=down,
            )
        ]
        return self.blocked(
            0.9,
            findings,
            (
                "PD has lost its quorum: bring the down members back (no action of this console "
                "starts a PD process)"
            ),
        )


class PDElection(TikvHypothesis):
    name = "pd_election"
    description = "PD is electing a leader (a leader stepped down or was lost moments ago)"

    def probes(self, ticket: TicketContext) -> Sequence[Probe]:
        return [MEMBERS]

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        members = need(results, MEMBERS)
        if members.get("leader") and not members.get("no_leader"):
            return reject(f"PD has a leader again: {members['leader']}")
        healthy = [m["name"] for m in members["members"] if m["healthy"]]
        said = next(iter((members.get("failures") or {}).values()), "no leader")
        findings = [
            _f(
                f"the member that answered says: {said[:160]}",
                MEMBERS,
                answered_by=members["answered_by"],
            )
        ]
        if healthy:
            findings.append(_f(f"healthy members: {', '.join(healthy)}", MEMBERS, healthy=healthy))
        return explain(0.5, findings)


# ---------------------------------------------------------------- disk and latency


class StoreFilling(TikvHypothesis):
    name = "store_filling"
    description = "this store's disk fills faster than the others' (PD moves regions off it)"

    def probes(self, ticket: TicketContext) -> Sequence[Probe]:
        return [store_detail(ticket.target), STORES]

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        d, stores = need(results, store_detail(ticket.target)), need(results, STORES)
        floor = float(ticket.details.get("floor") or 0.2)
        roomy = [
            s["store"]
            for s in stores["stores"]
            if s["store"] != ticket.target
            and s["state_name"] == "Up"
            and (s["available_ratio"] or 0) >= floor
        ]
        if not roomy:
            return reject("no other Up store has room either")
        findings = [
            _f(
                f"{ticket.target} has {d['available']} of {d['capacity']} available "
                f"({d['available_ratio']:.0%})",
                store_detail(ticket.target),
                available_ratio=d["available_ratio"],
            ),
            _f(f"stores with room: {', '.join(roomy)}", STORES, roomy=roomy),
        ]
        return self.blocked(
            0.8,
            findings,
            (
                f"{ticket.target} is short of disk while {', '.join(roomy)} have room: PD's "
                "low-space scoring moves regions off it; give it more disk before it fills "
                "(no action of this console adds disk)"
            ),
        )


class ClusterOutOfSpace(TikvHypothesis):
    name = "cluster_out_of_space"
    description = "every store is short of disk: the cluster needs more capacity"

    def probes(self, ticket: TicketContext) -> Sequence[Probe]:
        return [STORES]

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        stores = need(results, STORES)
        floor = float(ticket.details.get("floor") or 0.2)
        up = [s for s in stores["stores"] if s["state_name"] == "Up"]
        low = [s["store"] for s in up if (s["available_ratio"] or 1) < floor]
        if not up or len(low) < len(up):
            return reject(f"{len(up) - len(low)} Up stores still have room")
        return self.blocked(
            0.9,
            [_f(f"every Up store is under {floor:.0%} available", STORES, low=low)],
            "add stores (or disk) to the cluster: every store is short of space",
        )


class HotStore(TikvHypothesis):
    name = "hot_store"
    description = "the store serves far more requests than the others (load, not a bad disk)"

    def probes(self, ticket: TicketContext) -> Sequence[Probe]:
        return [STORES]

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        stores = need(results, STORES)
        qps = {
            s["store"]: (s["prometheus"] or {}).get("qps")
            for s in stores["stores"]
            if s["state_name"] == "Up"
        }
        mine = qps.get(ticket.target)
        others = sorted(v for k, v in qps.items() if k != ticket.target and v)
        if not mine or not others:
            return reject("no QPS from Prometheus to compare")
        median = others[len(others) // 2]
        if mine < 1.5 * median:
            return reject(f"{ticket.target} serves {mine:.0f}/s, the others {median:.0f}/s")
        claim = f"{ticket.target} serves {mine:.0f} requests/s, the others' median {median:.0f}/s"
        return explain(0.6, [_f(claim, STORES, qps=qps)])


class ClusterWideSlow(TikvHypothesis):
    name = "cluster_wide_slow"
    description = "every serving store is over the SLO: the load or a shared dependency"

    def probes(self, ticket: TicketContext) -> Sequence[Probe]:
        return [STORES]

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        stores = need(results, STORES)
        slo = float(ticket.details.get("slo_ms") or 0)
        p99 = {
            s["store"]: (s["prometheus"] or {}).get("grpc_p99_ms")
            for s in stores["stores"]
            if s["state_name"] == "Up"
        }
        fast = [k for k, v in p99.items() if v is not None and v <= slo]
        if fast or len(p99) < 2:
            return reject(f"{', '.join(fast) or 'no other store'} stays under the SLO")
        return self.blocked(
            0.7,
            [_f(f"every Up store is over {slo:.0f} ms", STORES, p99=p99)],
            "every store is slow alike: a person must look at the load",
        )


# ---------------------------------------------------------------- observation


class SourceFailing(TikvHypothesis):
    name = "source_failing"
    description = "a source the console reads keeps failing"

    def probes(self, ticket: TicketContext) -> Sequence[Probe]:
        return [STORES]

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        error = results.error(STORES)
        if error is not None and ticket.target == "pd":
            return explain(0.9, [_f(f"PD still does not answer: {error[:200]}", STORES)])
        failed = {s["name"]: s for s in need(results, STORES)["failed_sources"]}
        source = failed.get(ticket.target)
        if source is None:
            return reject(f"{ticket.target} answers now")
        claim = f"{ticket.target} still fails: {source['state']} ({source['reason'][:200]})"
        return explain(0.8, [_f(claim, STORES, **source)])


class SourceRecovered(TikvHypothesis):
    name = "source_recovered"
    description = "a passing failure: the source answers again"

    def probes(self, ticket: TicketContext) -> Sequence[Probe]:
        return [STORES]

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        if results.error(STORES) is not None:
            return reject("PD does not answer")
        failed = {s["name"] for s in need(results, STORES)["failed_sources"]}
        if ticket.target in failed:
            return reject(f"{ticket.target} still fails")
        return explain(
            0.4,
            [
                _f(
                    f"{ticket.target} is not among the failed sources",
                    STORES,
                    failed_sources=sorted(failed),
                )
            ],
        )


_STORE_SILENT = (StoreProcessDied, StoreProcessPaused, NetworkPartition, DiskFull)
RUNBOOK: dict[str, tuple[type[TikvHypothesis], ...]] = {
    "store_disconnected": _STORE_SILENT,
    "store_down": _STORE_SILENT,
    "store_offline_stuck": (NoRoomForReplicas, ReplicasBeingAdded),
    "regions_miss_peer": (NoRoomForReplicas, ReplicasBeingAdded),
    "regions_down_peer": (StoreRestarted, PeersUnreachable),
    "regions_pending_peer": (StoreRestarted, SlowStore),
    "leader_imbalance": (SlowStore, StoreDraining, StoreRestarted),
    "latency_slo": (SlowStore, HotStore, ClusterWideSlow),
    "store_disk_low": (StoreFilling, ClusterOutOfSpace),
    "pd_member_unhealthy": (PDMemberDown, PDMemberPartitioned),
    "no_pd_leader": (PDQuorumLost, PDElection),
    "observation_failed": (SourceFailing, SourceRecovered),
}


def hypotheses_for(
    invariant: str, catalog: ActionCatalog, *, prometheus: bool = False
) -> list[Hypothesis]:
    """The runbook's hypotheses for one invariant (none for an invariant it does not know)."""
    return [cls(catalog, prometheus) for cls in RUNBOOK.get(invariant, ())]
