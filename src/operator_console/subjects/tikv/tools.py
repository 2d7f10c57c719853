"""The read-only tools an investigation of a TiKV cluster may call: PD's stores, members,
region checks, regions by id, schedulers, operators and config, and Prometheus's queries."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from operator_console.contract import (
    ActionCatalog,
    ProcessBackend,
    Toolbox,
    ToolOutput,
    ToolSpec,
    only_fields,
)
from operator_console.domain import Observation
from operator_console.subjects.tikv.metrics import MetricsReader, query_names
from operator_console.subjects.tikv.observer import TikvObserver, raft_slowness
from operator_console.subjects.tikv.panel import size
from operator_console.subjects.tikv.pd import REGION_CHECKS, PDClient
from operator_console.subjects.tikv.pd_errors import PDError
from operator_console.subjects.tikv.pd_regions import Region
from operator_console.subjects.tikv.prometheus import PrometheusError
from operator_console.subjects.tikv.state import StoreView, TikvState, store_target, target_id

FRESH_S = 0.5  # probes of one investigation share an observation this recent
SAMPLE = 8
_EMPTY: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}


def _schema(required: list[str], **props: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": props,
        "required": required,
        "additionalProperties": False,
    }


_STORE = {"type": ["integer", "string"], "description": "a store: its id (5) or store-5"}
_REGION = {"type": ["integer", "string"], "description": "a region: its id (14) or region-14"}


def _ref(value: Any, kind: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str):
        if value.isdigit():
            return int(value)
        found = target_id(value, kind)
        if found is not None:
            return found
    raise ValueError(f"{kind} must be an id such as 5 or {kind}-5, not {value!r}")


def store_summary(view: StoreView) -> dict[str, Any]:
    """One store as an operator reads it: PD's state, heartbeat, counts, disk, Prometheus."""
    ratio = view.available_ratio
    return {
        "store": view.target,
        "address": view.address,
        "status_address": view.status_address,
        "state_name": view.state_name,
        "node_state": view.node_state,
        "heartbeat_age_s": view.heartbeat_age_s,
        "uptime_s": round(view.uptime_s, 1) if view.uptime_s is not None else None,
        "leaders": view.leaders,
        "regions": view.regions,
        "leader_weight": view.leader_weight,
        "region_weight": view.region_weight,
        "slow_score": view.slow_score,
        "leaders_evicted": view.evicted,
        "down_peers": view.down_peers,
        "pending_peers": view.pending_peers,
        "capacity": size(view.capacity_bytes),
        "available": size(view.available_bytes),
        "available_ratio": round(ratio, 4) if ratio is not None else None,
        "used": size(view.used_bytes),
        "prometheus": asdict(view.metrics) if view.metrics is not None else None,
    }


def region_summary(region: Region) -> dict[str, Any]:
    return {
        "region": f"region-{region.id}",
        "peers": [{"store": store_target(p.store_id), "role": p.role_name} for p in region.peers],
        "leader": store_target(region.leader.store_id) if region.leader else None,
        "down_peers": [
            {"store": store_target(p.store_id), "down_seconds": s} for p, s in region.down_peers
        ],
        "pending_peers": [store_target(p.store_id) for p in region.pending_peers],
        "epoch": {"conf_ver": region.conf_ver, "version": region.version},
        "approximate_size_mib": region.approximate_size_mib,
    }


class TikvTools:
    """The handlers behind the toolbox; every one reads, none changes the cluster."""

    def __init__(
        self,
        pd: PDClient,
        observer: TikvObserver,
        catalog: ActionCatalog,
        metrics: MetricsReader | None,
        processes: ProcessBackend | None = None,
    ) -> None:
        self.pd = pd
        self.observer = observer
        self.catalog = catalog
        self.metrics = metrics
        self.processes = processes
        self._at = 0.0

    async def _container(self, store: str) -> dict[str, Any]:
        """The store's container and its state, where the console has the stack's."""
        from operator_console.subjects.tikv.stack import StackError, TikvContainers

        assert self.processes is not None
        try:
            service = await TikvContainers(self.pd, self.processes).store_service(store)
        except StackError as exc:
            return {"error": str(exc)}
        await self.processes.refresh()
        return {"service": service, "state": self.processes.status(service)}

    async def _state(self) -> tuple[Observation, TikvState]:
        last = self.observer.last
        if last is None or time.monotonic() - self._at > FRESH_S:
            last = await self.observer.observe()
            self._at = time.monotonic()
        state = last.state
        if not isinstance(state, TikvState):
            raise TypeError(f"the observer returned {type(state).__name__}, not a TiKV state")
        if not state.pd_reached:
            raise PDError(state.failures.get("pd", "PD does not answer"))
        return last, state

    async def stores(self, tool_input: Mapping[str, Any]) -> ToolOutput:
        only_fields(tool_input)
        observation, state = await self._state()
        return ToolOutput.of(
            {
                "at": observation.at.isoformat(),
                "pd_time": state.pd_time,
                "summary": state.summary(),
                "stores": [
                    store_summary(v) for v in sorted(state.stores.values(), key=lambda v: v.id)
                ],
                "evict_leader_stores": [store_target(i) for i in state.evict_leader_stores],
                "prometheus": (
                    "not given"
                    if not state.prometheus
                    else "ok"
                    if state.prometheus_ok
                    else state.failures.get("prometheus", "failed")
                ),
                "failed_sources": [s.to_dict() for s in observation.failed_sources],
            }
        )

    async def store_detail(self, tool_input: Mapping[str, Any]) -> ToolOutput:
        only_fields(tool_input, "store")
        store_id = _ref(tool_input.get("store"), "store")
        _, state = await self._state()
        view = state.store(store_id)
        if view is None:
            known = ", ".join(sorted(state.stores)) or "none"
            return ToolOutput(f"PD lists no store {store_id} (stores: {known})", True)
        detail = store_summary(view)
        slowness = raft_slowness(view, list(state.stores.values()))
        detail["raft_vs_other_stores"] = (
            {"times_slower": round(slowness[0], 2), "figures": slowness[1]} if slowness else None
        )
        detail["prometheus_given"] = state.prometheus
        detail["max_store_down_time_s"] = state.config.max_store_down_time_s
        detail["low_space_ratio"] = state.config.low_space_ratio
        if self.processes is not None:
            detail["container"] = await self._container(f"store-{store_id}")
        return ToolOutput.of(detail)

    async def region_check(self, tool_input: Mapping[str, Any]) -> ToolOutput:
        only_fields(tool_input, "kind")
        kind = tool_input.get("kind")
        if kind not in REGION_CHECKS:
            raise ValueError(f"kind must be one of {', '.join(REGION_CHECKS)}")
        check = await self.pd.region_check(str(kind), sample=SAMPLE)
        return ToolOutput.of(
            {
                "kind": check.kind,
                "count": check.count,
                "sample": [
                    {
                        "region": f"region-{b.id}",
                        "leader": store_target(b.leader_store_id) if b.leader_store_id else None,
                        "peers": [store_target(i) for i in b.peer_store_ids],
                        "down_on": [store_target(i) for i in b.down_store_ids],
                        "pending_on": [store_target(i) for i in b.pending_store_ids],
                    }
                    for b in check.sample
                ],
                "down_peers_by_store": {
                    store_target(k): v for k, v in sorted(check.down_peers_by_store.items())
                },
                "pending_peers_by_store": {
                    store_target(k): v for k, v in sorted(check.pending_peers_by_store.items())
                },
            }
        )

    async def region(self, tool_input: Mapping[str, Any]) -> ToolOutput:
        only_fields(tool_input, "region")
        region = await self.pd.region(_ref(tool_input.get("region"), "region"))
        return ToolOutput.of(region_summary(region))

    async def pd_members(self, tool_input: Mapping[str, Any]) -> ToolOutput:
        only_fields(tool_input)
        observation = await self.observer.observe()
        state = observation.state
        if not isinstance(state, TikvState):
            raise TypeError("not a TiKV state")
        return ToolOutput.of(
            {
                "leader": state.leader,
                "no_leader": state.no_leader,
                "answered_by": state.answered_by,
                "answered_member": state.answered_member,
                "answered_role": state.answered_role,
                "members": [
                    {
                        "name": m.name,
                        "client_urls": m.client_urls,
                        "leader": m.leader,
                        "healthy": m.healthy,
                        "prometheus_scrapes_it": m.up,
                        "version": m.version,
                    }
                    for m in state.members
                ],
                "failures": dict(state.failures),
            }
        )

    async def schedulers(self, tool_input: Mapping[str, Any]) -> ToolOutput:
        only_fields(tool_input)
        names = await self.pd.schedulers()
        evicted = await self.pd.evict_leader_stores()
        return ToolOutput.of(
            {"schedulers": list(names), "evict_leader_stores": [store_target(i) for i in evicted]}
        )

    async def operators(self, tool_input: Mapping[str, Any]) -> ToolOutput:
        only_fields(tool_input)
        found = await self.pd.operators()
        return ToolOutput.of(
            {
                "count": len(found),
                "operators": [
                    {
                        "desc": o.desc,
                        "brief": o.brief,
                        "kinds": list(o.kinds),
                        "region": f"region-{o.region_id}",
                        "steps": list(o.steps),
                        "current_step": o.current_step,
                        "timeout": o.timeout,
                        "finished": o.finished,
                        "timed_out": o.timed_out,
                    }
                    for o in found
                ],
            }
        )

    async def pd_config(self, tool_input: Mapping[str, Any]) -> ToolOutput:
        only_fields(tool_input)
        replication = await self.pd.replication_config()
        schedule = await self.pd.schedule_config()
        keep = (
            "max-store-down-time",
            "leader-schedule-limit",
            "region-schedule-limit",
            "replica-schedule-limit",
            "low-space-ratio",
            "high-space-ratio",
            "enable-remove-down-replica",
            "enable-replace-offline-replica",
        )
        return ToolOutput.of(
            {
                "max_replicas": replication.max_replicas,
                "location_labels": list(replication.location_labels),
                "placement_rules": replication.enable_placement_rules,
                "schedule": {k: schedule.get(k) for k in keep},
            }
        )

    async def prometheus(self, tool_input: Mapping[str, Any]) -> ToolOutput:
        only_fields(tool_input, "query")
        if self.metrics is None:
            return ToolOutput("no Prometheus was given for this cluster", True)
        name = tool_input.get("query")
        if name not in query_names():
            raise ValueError(f"query must be one of {', '.join(query_names())}")
        values = await self.metrics.named(str(name))
        _, state = await self._state()
        instances = {
            self.metrics.labels.store_instance(v.status_address): v.target
            for v in state.stores.values()
        }
        return ToolOutput.of(
            {
                "query": name,
                "values": {k: v for k, v in sorted(values.items())},
                "stores": {instances[k]: v for k, v in values.items() if k in instances},
            }
        )

    async def list_actions(self, tool_input: Mapping[str, Any]) -> ToolOutput:
        only_fields(tool_input)
        return ToolOutput.of(
            {
                "actions": self.catalog.describe(),
                "not_available_here": [
                    {"name": n, "why": w} for n, w in self.catalog.unavailable.items()
                ],
            }
        )


def build_toolbox(
    pd: PDClient,
    observer: TikvObserver,
    catalog: ActionCatalog,
    metrics: MetricsReader | None,
    processes: ProcessBackend | None = None,
) -> Toolbox:
    tools = TikvTools(pd, observer, catalog, metrics, processes)
    box = Toolbox(unavailable=(PDError, PrometheusError, OSError, RuntimeError))
    specs = [
        (
            ToolSpec(
                "stores",
                "Every store as PD sees it now: state name (Up, Disconnected, "
                "Down, Offline), heartbeat age, uptime, leaders, regions, weights, slow score, "
                "evicted leaders, down/pending peers, disk, and Prometheus's figures.",
                _EMPTY,
            ),
            tools.stores,
        ),
        (
            ToolSpec(
                "store_detail",
                "One store in full, with how much slower its raft log is "
                "than the other stores' (Prometheus).",
                _schema(["store"], store=_STORE),
            ),
            tools.store_detail,
        ),
        (
            ToolSpec(
                "region_check",
                "One of PD's region checks: how many regions it lists, a "
                "sample, and the stores their down or pending peers are on.",
                _schema(["kind"], kind={"type": "string", "enum": list(REGION_CHECKS)}),
            ),
            tools.region_check,
        ),
        (
            ToolSpec(
                "region",
                "One region by id: peers, leader, down and pending peers.",
                _schema(["region"], region=_REGION),
            ),
            tools.region,
        ),
        (
            ToolSpec(
                "pd_members",
                "PD's members: who leads, each one's health, whether "
                "Prometheus scrapes it, and which member answered the console.",
                _EMPTY,
            ),
            tools.pd_members,
        ),
        (
            ToolSpec(
                "schedulers",
                "PD's running schedulers and the stores the "
                "evict-leader-scheduler holds leaders off.",
                _EMPTY,
            ),
            tools.schedulers,
        ),
        (
            ToolSpec("operators", "PD's pending operators (what PD is moving now).", _EMPTY),
            tools.operators,
        ),
        (
            ToolSpec(
                "pd_config",
                "PD's replication and scheduling config: max-replicas, "
                "max-store-down-time, schedule limits, space ratios.",
                _EMPTY,
            ),
            tools.pd_config,
        ),
    ]
    if metrics is not None:
        specs.append(
            (
                ToolSpec(
                    "prometheus",
                    "One named Prometheus query over the cluster's TiKV and PD targets "
                    "(per instance, and per store where the instance is one).",
                    _schema(["query"], query={"type": "string", "enum": query_names()}),
                ),
                tools.prometheus,
            )
        )
    specs.append(
        (
            ToolSpec(
                "list_actions",
                "The actions that may be proposed, with their "
                "parameters, risk and what they restore; and those not possible "
                "here, with the reason.",
                _EMPTY,
            ),
            tools.list_actions,
        )
    )
    for spec, handler in specs:
        box.add(spec, handler)
    return box
