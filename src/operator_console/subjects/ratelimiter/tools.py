"""Read-only investigation tools over the rate limiter: observations, details, metrics, logs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from operator_console.contract import ActionCatalog, Toolbox, ToolOutput, ToolSpec, only_fields
from operator_console.domain import Observation
from operator_console.subjects.ratelimiter.backend import Backend
from operator_console.subjects.ratelimiter.observer import (
    NodeView,
    RateLimiterState,
    StoreView,
    _parse_metrics,
)

ObserverGetter = Callable[[], Awaitable[Observation]]

STORE_PROCESS = "store"
MAX_LOG_LINES = 200
DEFAULT_LOG_LINES = 40
TOP_KEYS = 5
_PROBE_TIMEOUT_S = 0.5

_NODE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"node": {"type": "string", "description": "node name, e.g. node-1"}},
    "required": ["node"],
    "additionalProperties": False,
}
_EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}


_only = only_fields


def _rounded(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def _node_summary(view: NodeView) -> dict[str, Any]:
    return {
        "state": view.state,
        "process": view.process,
        "reachable": view.reachable,
        "error": view.error,
        "healthy": view.healthy,
        "health_latency_ms": _rounded(view.health_latency_ms),
        "store_reachable": view.store_reachable,
        "store_error": view.store_error,
        "config_version": view.config_version,
        "config_age_s": _rounded(view.config_age_s),
        "config_fresh": view.config_fresh,
        "failpoints": dict(view.failpoints),
        "fail_mode": view.fail_mode,
        "drained": view.drained,
    }


def _store_summary(view: StoreView) -> dict[str, Any]:
    return {
        "state": view.state,
        "process": view.process,
        "reachable": view.reachable,
        "error": view.error,
        "latency_ms": _rounded(view.latency_ms),
        "config_version": view.config_version,
        "limits": {k: {"limit": v.limit, "window_ms": v.window_ms} for k, v in view.limits.items()},
        "registered_nodes": list(view.registered_nodes),
    }


def _limits_differing(state: RateLimiterState, view: NodeView) -> dict[str, dict[str, Any]]:
    """Keys whose limit on this node is not the store's (the node runs a stale config)."""
    if view.limits is None or not state.store.reachable:
        return {}
    out = {}
    for key, limit in state.store.limits.items():
        mine = view.limits.get(key) or view.default_limit
        if mine is None or mine.limit != limit.limit:
            out[key] = {"node": mine.limit if mine else None, "store": limit.limit}
    return out


def _keys(state: RateLimiterState) -> dict[str, dict[str, Any]]:
    """The keys closest to (or over) their limit, by the clients' own count."""
    if state.workload is None:
        return {}
    truths = sorted(
        state.workload.keys.values(),
        key=lambda t: t.allowed_in_window / max(t.limit, 1),
        reverse=True,
    )
    chosen = [t for t in truths if t.allowed_in_window > t.limit]
    chosen += [t for t in truths[:TOP_KEYS] if t not in chosen]
    return {
        t.key: {
            "allowed_in_window": t.allowed_in_window,
            "limit": t.limit,
            "window_ms": t.window_ms,
            "over": t.allowed_in_window > t.limit,
        }
        for t in chosen
    }


class RateLimiterTools:
    """The handlers behind the toolbox; every one reads, none changes the lab."""

    def __init__(self, backend: Backend, observe: ObserverGetter, catalog: ActionCatalog) -> None:
        self.backend = backend
        self._observe = observe
        self.catalog = catalog

    # -- shared reads ----------------------------------------------------------------------

    async def _state(self) -> tuple[Observation, RateLimiterState]:
        observation = await self._observe()
        state = observation.state
        if not isinstance(state, RateLimiterState):
            raise TypeError(f"the observer returned {type(state).__name__}, not a rate limiter")
        return observation, state

    def _node(self, tool_input: Mapping[str, Any]) -> str:
        _only(tool_input, "node")
        node = tool_input.get("node")
        if node not in self.backend.node_names:
            raise ValueError(f"unknown node {node!r} (nodes: {', '.join(self.backend.node_names)})")
        return str(node)

    async def _clock_offsets(self, state: RateLimiterState) -> dict[str, float]:
        """How far each node's heartbeat clock is from the console's, in ms (read via any node)."""
        for view in state.nodes.values():
            if not (view.reachable and view.store_reachable):
                continue
            try:
                response = await self.backend.http.get(
                    f"{view.url}/api/nodes", timeout=_PROBE_TIMEOUT_S
                )
                response.raise_for_status()
                beats = response.json().get("nodes") or []
            except (httpx.HTTPError, ValueError, AttributeError):
                continue
            now = datetime.now(UTC)
            offsets: dict[str, float] = {}
            for beat in beats:
                try:
                    at = datetime.fromisoformat(str(beat["at"]))
                    offsets[str(beat["node"])] = round((at - now).total_seconds() * 1000)
                except (KeyError, TypeError, ValueError):
                    continue
            return offsets
        return {}

    # -- tools -----------------------------------------------------------------------------

    async def observe(self, tool_input: Mapping[str, Any]) -> ToolOutput:
        _only(tool_input)
        observation, state = await self._state()
        clocks = await self._clock_offsets(state)
        nodes = {}
        for name, view in state.nodes.items():
            summary = _node_summary(view)
            summary["limits_differing"] = _limits_differing(state, view)
            summary["clock_offset_ms"] = clocks.get(name)
            nodes[name] = summary
        clients: dict[str, Any] = {}
        if state.workload is not None:
            per_node = {
                name: {k: _rounded(v) if k.endswith("_ms") else v for k, v in stats.items()}
                for name, stats in state.workload.per_target.items()
            }
            clients = {"window_s": state.workload.window_s, "per_node": per_node}
        return ToolOutput.of(
            {
                "at": observation.at.isoformat(),
                "summary": state.summary(),
                "nodes": nodes,
                "store": _store_summary(state.store),
                "clients": clients,
                "keys": _keys(state),
                "failed_sources": [s.to_dict() for s in observation.failed_sources],
            }
        )

    async def node_detail(self, tool_input: Mapping[str, Any]) -> ToolOutput:
        node = self._node(tool_input)
        _, state = await self._state()
        view = state.nodes[node]
        detail = asdict(view)
        detail["state"] = view.state
        detail["process"] = self.backend.node_status(node)
        detail["link"] = await self.backend.link(node)
        workload = self.backend.workload
        detail["drained"] = workload is not None and node in workload.drained
        detail["limits_differing"] = _limits_differing(state, view)
        detail["store_config_version"] = state.store.config_version
        detail["store_reachable_from_console"] = state.store.reachable
        detail["config_refresh_s"] = self.backend.config_refresh_s
        detail["clock_offset_ms"] = (await self._clock_offsets(state)).get(node)
        if state.workload is not None:
            detail["clients"] = state.workload.per_target.get(node)
        return ToolOutput.of(detail)

    async def store_detail(self, tool_input: Mapping[str, Any]) -> ToolOutput:
        _only(tool_input)
        _, state = await self._state()
        detail = _store_summary(state.store)
        detail["process"] = self.backend.store_status()
        detail["pid"] = self.backend.store_pid()
        detail["nodes_reaching_it"] = sorted(
            n for n, v in state.nodes.items() if v.store_reachable is True
        )
        detail["nodes_cut_off"] = sorted(
            n for n, v in state.nodes.items() if v.store_reachable is False
        )
        return ToolOutput.of(detail)

    async def node_metrics(self, tool_input: Mapping[str, Any]) -> ToolOutput:
        node = self._node(tool_input)
        url = f"{self.backend.node_url(node)}/metrics"
        try:
            response = await self.backend.http.get(url, timeout=_PROBE_TIMEOUT_S)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            reason = "timed out" if isinstance(exc, httpx.TimeoutException) else str(exc)
            if isinstance(exc, httpx.ConnectError):
                reason = "connection refused"
            return ToolOutput.of({"node": node, "reachable": False, "error": reason or repr(exc)})
        return ToolOutput.of({"node": node, "reachable": True, **parse_node_metrics(response.text)})

    async def tail_log(self, tool_input: Mapping[str, Any]) -> ToolOutput:
        _only(tool_input, "process", "lines")
        process = tool_input.get("process")
        known = [*self.backend.node_names, STORE_PROCESS]
        if process not in known:
            raise ValueError(f"unknown process {process!r} (processes: {', '.join(known)})")
        lines = tool_input.get("lines", DEFAULT_LOG_LINES)
        if isinstance(lines, bool) or not isinstance(lines, int) or not 1 <= lines <= MAX_LOG_LINES:
            raise ValueError(f"lines must be an integer from 1 to {MAX_LOG_LINES}")
        found = await self.backend.log(str(process), lines)
        if found is None:
            return ToolOutput(f"no log of {process} here: no process or container backend", True)
        path, text = found
        return ToolOutput.of(
            {"process": process, "path": path, "lines": text.splitlines() if text else []}
        )

    async def list_actions(self, tool_input: Mapping[str, Any]) -> ToolOutput:
        _only(tool_input)
        actions = []
        for spec in self.catalog.describe():
            schema = spec["params"]
            required = set(schema.get("required", []))
            params = {
                name: _param_text(prop, name in required)
                for name, prop in schema.get("properties", {}).items()
            }
            actions.append({**spec, "params": params})
        unavailable = [{"name": n, "why": why} for n, why in self.catalog.unavailable.items()]
        return ToolOutput.of({"actions": actions, "not_available_here": unavailable})


def _param_text(prop: Mapping[str, Any], required: bool) -> str:
    """One parameter's JSON schema as one line: what it is, its type and bounds."""
    variants = [v for v in prop.get("anyOf", []) if v.get("type") != "null"]
    merged = {**prop, **(variants[0] if variants else {})}
    if "enum" in merged:
        kind = "one of " + ", ".join(str(v) for v in merged["enum"])
    else:
        kind = str(merged.get("type", "any"))
        bounds = [f"> {merged['exclusiveMinimum']}"] if "exclusiveMinimum" in merged else []
        if "minLength" in merged or "maxLength" in merged:
            bounds.append(f"{merged.get('minLength', 0)}..{merged.get('maxLength', '')} chars")
        kind += f" ({', '.join(bounds)})" if bounds else ""
    text = f"{merged['description']}: {kind}" if merged.get("description") else kind
    return text if required else f"{text}; optional"


def parse_node_metrics(text: str) -> dict[str, Any]:
    """The counters an operator reads off a node's /metrics: checks, store errors, config."""
    checks, store_errors, _buckets = _parse_metrics(text)
    out: dict[str, Any] = {
        "checks": checks,
        "store_errors": store_errors,
        "config_version": None,
        "config_age_s": None,
        "failpoints_active": {},
        "check_latency_mean_ms": None,
    }
    latency_sum = latency_count = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "ratelimiter_config_version":
                out["config_version"] = int(sample.value)
            elif sample.name == "ratelimiter_config_age_seconds":
                out["config_age_s"] = round(sample.value, 2)
            elif sample.name == "ratelimiter_failpoint_active":
                out["failpoints_active"][sample.labels.get("name", "?")] = bool(sample.value)
            elif sample.name == "ratelimiter_check_latency_seconds_sum":
                latency_sum += sample.value
            elif sample.name == "ratelimiter_check_latency_seconds_count":
                latency_count += sample.value
    if latency_count:
        out["check_latency_mean_ms"] = round(latency_sum / latency_count * 1000, 2)
    return out


def build_toolbox(backend: Backend, observe: ObserverGetter, catalog: ActionCatalog) -> Toolbox:
    """The read-only tools one investigation may call (no log tool without the processes)."""
    tools = RateLimiterTools(backend, observe, catalog)
    box = Toolbox(unavailable=(RuntimeError, OSError, httpx.HTTPError))
    processes = [*backend.node_names, STORE_PROCESS]
    box.add(
        ToolSpec(
            "observe",
            "A fresh look at the whole cluster: every node's state, process, health, store "
            "reachability, config version and failpoints; the store; the clients' per-node "
            "stats; the keys nearest their limit; sources that failed to answer.",
            _EMPTY_SCHEMA,
        ),
        tools.observe,
    )
    box.add(
        ToolSpec(
            "node_detail",
            "Everything about one node: its full view, process status, the state of its link "
            "to the store (latency_ms, cut), whether it is drained, its heartbeat clock offset.",
            _NODE_SCHEMA,
        ),
        tools.node_detail,
    )
    box.add(
        ToolSpec(
            "store_detail",
            "The store: reachability, latency, config version, limits, process status, and "
            "which nodes can reach it.",
            _EMPTY_SCHEMA,
        ),
        tools.store_detail,
    )
    box.add(
        ToolSpec(
            "node_metrics",
            "One node's Prometheus counters: checks by result, store errors, config version "
            "and age, active failpoints, mean check latency.",
            _NODE_SCHEMA,
        ),
        tools.node_metrics,
    )
    if backend.processes:
        _add_log_tool(box, tools, processes)
    box.add(
        ToolSpec(
            "list_actions",
            "The actions that may be proposed, with their parameters, risk and what they restore; "
            "and those this console cannot do here, with the reason.",
            _EMPTY_SCHEMA,
        ),
        tools.list_actions,
    )
    return box


def _add_log_tool(box: Toolbox, tools: RateLimiterTools, processes: list[str]) -> None:
    box.add(
        ToolSpec(
            "tail_log",
            "The last lines of one lab process's log.",
            {
                "type": "object",
                "properties": {
                    "process": {"type": "string", "enum": processes},
                    "lines": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": MAX_LOG_LINES,
                        "default": DEFAULT_LOG_LINES,
                    },
                },
                "required": ["process"],
                "additionalProperties": False,
            },
        ),
        tools.tail_log,
    )
