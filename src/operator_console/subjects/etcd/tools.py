"""Read-only investigation tools over etcd: the cluster's status, one member in detail, its
metrics, the alarm list, the member list and (for the local lab) its log."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict
from typing import Any

import httpx

from operator_console.contract import ActionCatalog, Toolbox, ToolOutput, ToolSpec, only_fields
from operator_console.domain import Observation
from operator_console.lab.etcd.client import EtcdError
from operator_console.subjects.etcd.backend import EtcdBackend
from operator_console.subjects.etcd.metrics import bucket_quantile, parse_metrics, summary
from operator_console.subjects.etcd.state import EtcdState, MemberView

ObserverGetter = Callable[[], Awaitable[Observation]]

MAX_LOG_LINES = 200
DEFAULT_LOG_LINES = 40
_READ_TIMEOUT_S = 1.0

_MEMBER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"member": {"type": "string", "description": "member name, e.g. member-1"}},
    "required": ["member"],
    "additionalProperties": False,
}
_OPTIONAL_MEMBER_SCHEMA: dict[str, Any] = {**_MEMBER_SCHEMA, "required": []}
_EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}


def _member_summary(view: MemberView) -> dict[str, Any]:
    return {
        "state": view.state,
        "process": view.process,
        "answers": view.answers,
        "error": view.error,
        "error_kind": view.error_kind,
        "member_id": view.member_id,
        "leader": view.leader,
        "is_leader": view.is_leader,
        "raft_term": view.raft_term,
        "raft_index": view.raft_index,
        "applied_index": view.applied_index,
        "apply_lag": view.apply_lag,
        "db_size": view.db_size,
        "db_size_in_use": view.db_size_in_use,
        "quota_bytes": view.quota_bytes,
        "alarms": list(view.alarms),
        "health": view.health,
        "health_reason": view.health_reason,
        "quorum_ms": view.quorum_ms,
        "commit_ms": view.commit_ms,
        "wal_fsync_p99_ms": view.wal_fsync_p99_ms,
        "leader_changes_window": view.leader_changes_window,
        "peer_sent_failures_growth": dict(view.peer_sent_failures_growth),
    }


class EtcdTools:
    """The handlers behind the toolbox; every one reads, none changes the cluster."""

    def __init__(self, backend: EtcdBackend, observe: ObserverGetter, catalog: ActionCatalog):
        self.backend = backend
        self._observe = observe
        self.catalog = catalog

    async def _state(self) -> tuple[Observation, EtcdState]:
        observation = await self._observe()
        state = observation.state
        if not isinstance(state, EtcdState):
            raise RuntimeError(f"the cluster could not be observed: {state.summary()}")
        return observation, state

    def _member(self, tool_input: Mapping[str, Any], *, required: bool = True) -> str | None:
        only_fields(tool_input, "member")
        member = tool_input.get("member")
        if member is None and not required:
            return None
        names = self.backend.member_names
        if member not in names:
            raise ValueError(f"unknown member {member!r} (members: {', '.join(names)})")
        return str(member)

    async def cluster_status(self, tool_input: Mapping[str, Any]) -> ToolOutput:
        only_fields(tool_input)
        observation, state = await self._state()
        clients = None
        if state.traffic is not None:
            clients = asdict(state.traffic)
        return ToolOutput.of(
            {
                "at": observation.at.isoformat(),
                "summary": state.summary(),
                "leader": state.leader,
                "term": state.term,
                "size": state.size,
                "quorum": state.quorum,
                "members": {n: _member_summary(v) for n, v in state.members.items()},
                "clients": clients,
                "ledger": asdict(state.ledger) if state.ledger is not None else None,
                "failed_sources": [s.to_dict() for s in observation.failed_sources],
            }
        )

    async def member_detail(self, tool_input: Mapping[str, Any]) -> ToolOutput:
        member = self._member(tool_input)
        assert member is not None
        _, state = await self._state()
        view = state.members[member]
        detail = asdict(view)
        detail["state"] = view.state
        detail["quorum_ms"] = view.quorum_ms
        detail["commit_ms"] = view.commit_ms
        detail["pid"] = self.backend.pid(member)
        detail["process_id"] = self.backend.where(member)
        detail["peer_links"] = self.backend.peer_links(member)
        detail["cluster_leader"] = state.leader
        detail["cluster_term"] = state.term
        leader = state.members.get(state.leader) if state.leader else None
        detail["leader_raft_index"] = leader.raft_index if leader else None
        detail["others"] = {
            name: {
                "state": other.state,
                "leader": other.leader,
                "raft_index": other.raft_index,
                "quorum_ms": other.quorum_ms,
                "commit_ms": other.commit_ms,
                "sent_failures_to_it_growth": other.peer_sent_failures_growth.get(member, 0.0),
            }
            for name, other in state.members.items()
            if name != member
        }
        if state.traffic is not None:
            detail["clients"] = state.traffic.per_member.get(member)
        return ToolOutput.of(detail)

    async def member_metrics(self, tool_input: Mapping[str, Any]) -> ToolOutput:
        member = self._member(tool_input)
        assert member is not None
        try:
            text = await self.backend.client(member).metrics(timeout=_READ_TIMEOUT_S)
        except EtcdError as exc:
            return ToolOutput.of({"member": member, "reachable": False, "error": str(exc)})
        metrics = parse_metrics(text)
        out: dict[str, Any] = {"member": member, "reachable": True, **summary(metrics)}
        for histogram in ("wal_fsync", "backend_commit"):
            value, count = bucket_quantile(metrics.buckets.get(histogram, {}), {}, 0.99)
            out[f"{histogram}_p99_ms_since_start"] = (
                round(value * 1000, 2) if value is not None and value != float("inf") else value
            )
            out[f"{histogram}_count"] = count
        return ToolOutput.of(out)

    async def _any(self, call: Callable[[Any], Awaitable[Any]]) -> tuple[str, Any]:
        failures = []
        for name in self.backend.member_names:
            try:
                return name, await call(self.backend.client(name))
            except EtcdError as exc:
                failures.append(str(exc)[:200])
        raise RuntimeError("no member could answer: " + "; ".join(failures))

    async def alarms(self, tool_input: Mapping[str, Any]) -> ToolOutput:
        only_fields(tool_input)
        _, state = await self._state()
        ids = {v.member_id: n for n, v in state.members.items() if v.member_id}
        in_status = {n: list(v.alarms) for n, v in state.members.items() if v.alarms}
        try:
            via, found = await self._any(lambda c: c.alarms(timeout=2.0))
        except RuntimeError as exc:
            return ToolOutput.of({"alarms": None, "error": str(exc), "in_status": in_status})
        alarms = [
            {"member": ids.get(f"{a.member_id:x}", f"{a.member_id:x}"), "alarm": a.alarm}
            for a in found
        ]
        return ToolOutput.of({"via": via, "alarms": alarms, "in_status": in_status})

    async def member_list(self, tool_input: Mapping[str, Any]) -> ToolOutput:
        member = self._member(tool_input, required=False)

        async def listed(client: Any) -> Any:
            return await client.member_list(timeout=_READ_TIMEOUT_S)

        if member is not None:
            try:
                via, found = member, await listed(self.backend.client(member))
            except EtcdError as exc:
                return ToolOutput.of({"via": member, "error": str(exc)})
        else:
            via, found = await self._any(listed)
        return ToolOutput.of(
            {
                "via": via,
                "members": [
                    {
                        "id": m.id_hex,
                        "name": m.name,
                        "peer_urls": list(m.peer_urls),
                        "client_urls": list(m.client_urls),
                        "is_learner": m.is_learner,
                    }
                    for m in found
                ],
            }
        )

    async def tail_log(self, tool_input: Mapping[str, Any]) -> ToolOutput:
        only_fields(tool_input, "member", "lines")
        member = self._member({"member": tool_input.get("member")})
        assert member is not None
        lines = tool_input.get("lines", DEFAULT_LOG_LINES)
        if isinstance(lines, bool) or not isinstance(lines, int) or not 1 <= lines <= MAX_LOG_LINES:
            raise ValueError(f"lines must be an integer from 1 to {MAX_LOG_LINES}")
        found = await self.backend.log(member, lines)
        if found is None:
            return ToolOutput(f"no log of {member} here: no process or container backend", True)
        path, text = found
        return ToolOutput.of(
            {"member": member, "path": path, "lines": text.splitlines() if text else []}
        )

    async def list_actions(self, tool_input: Mapping[str, Any]) -> ToolOutput:
        only_fields(tool_input)
        actions = [
            {
                "name": spec["name"],
                "description": spec["description"],
                "risk": spec["risk"],
                "restores": spec["restores"],
                "effect": spec["effect"],
                "params": list(spec["params"].get("properties", {})),
            }
            for spec in self.catalog.describe()
        ]
        unavailable = [{"name": n, "why": why} for n, why in self.catalog.unavailable.items()]
        return ToolOutput.of({"actions": actions, "not_available_here": unavailable})


def build_toolbox(backend: EtcdBackend, observe: ObserverGetter, catalog: ActionCatalog) -> Toolbox:
    """The read-only tools one investigation may call (no log tool without the processes)."""
    tools = EtcdTools(backend, observe, catalog)
    box = Toolbox(unavailable=(RuntimeError, OSError, httpx.HTTPError, EtcdError))
    box.add(
        ToolSpec(
            "cluster_status",
            "A fresh look at every member: state, process, who it follows, raft term, "
            "committed and applied index, apply lag, database size against quota, alarms, "
            "health and how long a quorum read through it takes; the clients' last seconds "
            "(requests, errors, p99 per member); the write ledger's last check; failed sources.",
            _EMPTY_SCHEMA,
        ),
        tools.cluster_status,
    )
    box.add(
        ToolSpec(
            "member_detail",
            "Everything about one member: its full view, pid, its peer links where the console "
            "runs them, the cluster's leader and its raft index, and how every other member "
            "sees it (who they follow, their failed sends to it).",
            _MEMBER_SCHEMA,
        ),
        tools.member_detail,
    )
    box.add(
        ToolSpec(
            "member_metrics",
            "One member's /metrics now: has_leader, leader changes, proposals failed and "
            "pending, database size and quota, peer round trips and failed sends per peer, "
            "heartbeat send failures, WAL fsync and backend commit p99 since it started.",
            _MEMBER_SCHEMA,
        ),
        tools.member_metrics,
    )
    box.add(
        ToolSpec(
            "alarms",
            "The cluster's alarm list (NOSPACE, CORRUPT) through etcd's alarm API, and the "
            "alarms each member reports in its status.",
            _EMPTY_SCHEMA,
        ),
        tools.alarms,
    )
    box.add(
        ToolSpec(
            "member_list",
            "The cluster's membership as one member (or the first that answers) sees it.",
            _OPTIONAL_MEMBER_SCHEMA,
        ),
        tools.member_list,
    )
    if backend.processes:
        box.add(
            ToolSpec(
                "tail_log",
                "The last lines of one member's log (etcd's own JSON lines)"
                + (
                    ", read from its container (docker logs)."
                    if backend.process_kind == "container"
                    else "."
                ),
                {
                    "type": "object",
                    "properties": {
                        "member": {"type": "string", "enum": backend.member_names},
                        "lines": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": MAX_LOG_LINES,
                            "default": DEFAULT_LOG_LINES,
                        },
                    },
                    "required": ["member"],
                    "additionalProperties": False,
                },
            ),
            tools.tail_log,
        )
    box.add(
        ToolSpec(
            "list_actions",
            "The actions that may be proposed, with their parameters, risk and what they "
            "restore; and those this console cannot do here, with the reason.",
            _EMPTY_SCHEMA,
        ),
        tools.list_actions,
    )
    return box
