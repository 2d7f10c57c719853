"""The tikv agent kit: PD actions, investigation tools, the runbook and what a model needs
to know about a TiKV cluster watched through PD and Prometheus."""

from __future__ import annotations

from collections.abc import Sequence

from operator_console.contract import ActionCatalog, Hypothesis, ProcessBackend, Toolbox
from operator_console.subjects.tikv.metrics import MetricsReader
from operator_console.subjects.tikv.observer import TikvObserver
from operator_console.subjects.tikv.pd import PDClient
from operator_console.subjects.tikv.runbook import hypotheses_for
from operator_console.subjects.tikv.tools import build_toolbox

RUNBOOK_TEXT = """\
TiKV runbook. Targets are store-N (PD's store id), PD member names (pd-0), "regions" and
"pd". Gather evidence with the tools first; recommend an action only when the evidence
shows its cause. PD's word on a store is its state_name: Up, Disconnected (no heartbeat for
20 s), Down (no heartbeat for max-store-down-time, 30 min by default), Offline (being
removed), Tombstone (removed).

store_disconnected / store_down (target: a store)
- Process died: PD has no heartbeat AND Prometheus cannot scrape the store's status port
  (targets_up = 0). The fix is restarting its TiKV process (restart_store): available when
  the console has the cluster's containers (a compose stack); otherwise say so, a person must.
  A paused container answers nothing but its process is there: resume_store.
- Network partition: PD has no heartbeat but Prometheus still scrapes it (up = 1). No
  action reaches the network: escalate.
- Disk full: the store's last report shows under 5 % available. Free disk, then restart.
- A Down store's regions: PD replaces its replicas only while there are at least
  max-replicas other Up stores (pd_config, stores); otherwise regions stay short a peer.

store_offline_stuck (target: a store being removed, PD: Offline)
- Fewer other Up stores than max-replicas: its replicas have nowhere to go. Escalate: add
  a store, or cancel the removal. Otherwise PD moves them (operators): wait; transfer_peer
  moves one region's replica by hand.

regions_miss_peer (target: regions)
- Fewer Up stores than max-replicas: PD has nowhere to add the replica. Escalate: bring the
  store back or add one. Do not remove more peers.
- PD already adds replicas (operators): wait.

regions_down_peer / regions_pending_peer (target: the Up store holding those peers)
- The store restarted minutes ago (uptime small): the state is stale or catching up; wait.
- The store is Up to PD but its raft peers cannot reach it: a network fault between TiKV
  stores; escalate. transfer_peer off it only where another store does not hold the region.

leader_imbalance (target: the store furthest from the mean)
- A slow store (slow score >= 80, or its raft append/apply p99 several times the others'):
  PD moves leaders off it. drain_store(store) keeps them off (high risk: every leader moves
  at once; a mitigation, undo with undrain_store once the store is fast again).
- Leaders being evicted (evict-leader-scheduler lists it) and still on their way: wait.
- The store restarted minutes ago: balance-leader brings leaders back; wait.

latency_slo (target: a store over the gRPC p99 SLO)
- A slow store (raft latency, slow score): drain_store. Far more QPS than the others: load,
  not the disk; every store over the SLO: escalate.

store_disk_low (target: a store under 20 % available)
- This store alone: PD's low-space scoring moves regions off it; it needs more disk.
  Every store: the cluster needs capacity. Escalate in both cases; set_store_weight (high
  risk) moves regions only when a person asks for it.

pd_member_unhealthy (target: a PD member)
- Its health check fails and Prometheus cannot scrape it: the process is down (restart it:
  not possible here). Health fails but Prometheus scrapes it: a network fault.

no_pd_leader (target: pd)
- A majority of members unhealthy: quorum lost; escalate. Otherwise an election: wait.

observation_failed (target: a source)
- Diagnose only: say which source fails and why; no action.
"""


class TikvAgentKit:
    """What the operator agent gets for a TiKV cluster (an `AgentKit`)."""

    def __init__(
        self,
        pd: PDClient,
        observer: TikvObserver,
        catalog: ActionCatalog,
        metrics: MetricsReader | None,
        *,
        about: str,
        processes: ProcessBackend | None = None,
    ) -> None:
        self._processes = processes
        self._pd = pd
        self._observer = observer
        self._catalog = catalog
        self._metrics = metrics
        self._about = about

    @property
    def actions(self) -> ActionCatalog:
        return self._catalog

    @property
    def runbook(self) -> str:
        return RUNBOOK_TEXT

    @property
    def context(self) -> str:
        lines = [
            "A TiKV cluster: TiKV stores hold the data in regions (raft groups of usually 3 "
            "replicas, one of them the leader serving reads and writes); PD (a raft group of "
            "its own) places regions and leaders and is the only way in: the console reads "
            "PD's HTTP API and, when given, Prometheus, and acts only through PD's operator "
            "and scheduler APIs.",
            self._about,
            "",
            "Tools (read-only): " + ", ".join(spec.name for spec in self.toolbox().specs()) + ".",
            "",
            "Actions you may recommend (name(params): risk; restores):",
        ]
        for spec in self._catalog.describe():
            params = ", ".join(spec["params"].get("properties", {}))
            restores = ", ".join(spec["restores"]) or "nothing by itself"
            kind = " A mitigation, not a fix." if spec["effect"] == "mitigate" else ""
            lines.append(
                f"- {spec['name']}({params}): {spec['risk']}; restores {restores}. "
                f"{spec['description']}{kind}"
            )
        for name, why in self._catalog.unavailable.items():
            lines.append(f"- {name}: not available here ({why}); do not recommend it.")
        return "\n".join(lines)

    def toolbox(self) -> Toolbox:
        return build_toolbox(
            self._pd, self._observer, self._catalog, self._metrics, self._processes
        )

    def hypotheses(self, invariant: str) -> Sequence[Hypothesis]:
        return hypotheses_for(invariant, self._catalog, prometheus=self._metrics is not None)
