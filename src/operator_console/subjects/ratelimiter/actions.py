"""What the operator may do to the rate limiter: each action really acts on the cluster."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import quote

import httpx
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, create_model

from operator_console.contract import (
    ActionCatalog,
    ActionSpec,
    Effect,
    ProcessBackend,
    ProcessControlError,
    Risk,
)
from operator_console.subjects.ratelimiter.backend import (
    NO_BALANCER,
    NO_PROCESS,
    STORE_PROCESS,
    Backend,
)

if TYPE_CHECKING:
    from operator_console.subjects.ratelimiter.workload import RateLimiterWorkload

FailpointName = Literal["clock_skew_ms", "config_refresh_stuck"]
FailMode = Literal["open", "closed"]
RESERVED_KEY = "__default__"
MAX_KEY_LENGTH = 512
_HTTP_TIMEOUT_S = 3.0
_HTTP_ATTEMPTS = 2
_READY_S = 15.0


class ActionFailed(RuntimeError):
    """The lab refused or could not carry out an action; the message names the target and why."""


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _check_key(value: str) -> str:
    if value == RESERVED_KEY:
        raise ValueError(f"{RESERVED_KEY} is reserved for the default limit")
    return value


Key = Annotated[
    str,
    Field(min_length=1, max_length=MAX_KEY_LENGTH, description="a rate-limited key"),
    AfterValidator(_check_key),
]


class NoParams(_Params):
    pass


def _node_type(nodes: Sequence[str]) -> Any:
    """A node-name type that accepts only this cluster's nodes (and lists them in its schema)."""
    known = tuple(nodes)

    def check(value: str) -> str:
        if value not in known:
            raise ValueError(f"unknown node {value!r} (nodes: {', '.join(known)})")
        return value

    return Annotated[
        str,
        Field(description="node name", json_schema_extra={"enum": list(known)}),
        AfterValidator(check),
    ]


class _Models:
    """The parameter models of one cluster's catalog (node names are part of the schema)."""

    def __init__(self, nodes: Sequence[str]) -> None:
        node = _node_type(nodes)
        self.node: type[BaseModel] = create_model("NodeParams", __base__=_Params, node=(node, ...))
        self.failpoint: type[BaseModel] = create_model(
            "ClearFailpointParams",
            __base__=_Params,
            node=(node, ...),
            name=(FailpointName, ...),
        )
        self.fail_mode: type[BaseModel] = create_model(
            "SetFailModeParams",
            __base__=_Params,
            node=(node, ...),
            mode=(FailMode, ...),
        )
        self.key: type[BaseModel] = create_model("KeyParams", __base__=_Params, key=(Key, ...))
        self.limit: type[BaseModel] = create_model(
            "SetLimitParams",
            __base__=_Params,
            key=(Key, ...),
            limit=(StrictInt, Field(gt=0, description="requests allowed per window")),
            window_ms=(
                StrictInt | None,
                Field(default=None, gt=0, description="window length; the default when omitted"),
            ),
        )


def _why(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.ConnectError):
        return "connection refused"
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    return str(exc) or type(exc).__name__


class RateLimiterActions:
    """The action bodies: process signals and restarts (the local lab's processes or a
    stack's containers), the nodes' HTTP API, and the load balancer (the console's own
    clients only)."""

    def __init__(self, backend: Backend, processes: ProcessBackend | None) -> None:
        self.backend = backend
        self._processes = processes

    @property
    def processes(self) -> ProcessBackend:
        if self._processes is None:
            raise ActionFailed(f"this action {NO_PROCESS}")
        return self._processes

    async def _status(self, name: str) -> str | None:
        await self.processes.refresh()
        return self.processes.status(name)

    async def _do(self, verb: str, name: str, act: Callable[[str], Awaitable[None]]) -> None:
        try:
            await act(name)
        except ProcessControlError as exc:
            raise ActionFailed(f"{verb} {name} failed: {exc}") from exc

    async def _node_answers(self, node: str) -> float:
        """Seconds until the node's health endpoint answers after a (re)start."""
        started = time.monotonic()
        url = f"{self.backend.node_url(node)}/api/health"
        while True:
            try:
                response = await self.backend.http.get(url, timeout=1.0)
            except httpx.HTTPError:
                pass
            else:
                if response.status_code < 500:
                    return time.monotonic() - started
            if time.monotonic() - started > _READY_S:
                raise ActionFailed(f"{node} was started again but does not answer its health")
            await asyncio.sleep(0.1)

    # -- helpers ---------------------------------------------------------------------------

    async def _call(
        self, node: str, method: str, path: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """One call to a node's API; retried once on a refused connection or a 503."""
        url = f"{self.backend.node_url(node)}{path}"
        for attempt in range(1, _HTTP_ATTEMPTS + 1):
            try:
                response = await self.backend.http.request(
                    method, url, json=body, timeout=_HTTP_TIMEOUT_S
                )
            except httpx.HTTPError as exc:
                if attempt < _HTTP_ATTEMPTS and isinstance(exc, httpx.ConnectError):
                    continue
                raise ActionFailed(f"{method} {path} on {node}: {_why(exc)}") from exc
            if response.status_code == 503 and attempt < _HTTP_ATTEMPTS:
                continue
            if response.status_code >= 400:
                raise ActionFailed(
                    f"{method} {path} on {node}: HTTP {response.status_code} {response.text[:200]}"
                )
            try:
                data = response.json()
            except ValueError:
                data = {}
            return data if isinstance(data, dict) else {"answer": data}
        raise AssertionError("unreachable")  # pragma: no cover

    async def _call_any(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[str, dict[str, Any]]:
        """The same call through the first running node that answers it."""
        failures = []
        for node in self.backend.node_names:
            status = self.backend.node_status(node)
            if status not in ("running", None):
                failures.append(f"{node} {status}")
                continue
            try:
                return node, await self._call(node, method, path, body)
            except ActionFailed as exc:
                failures.append(str(exc))
        raise ActionFailed(f"{method} {path}: no node could do it ({'; '.join(failures)})")

    def _clients(self) -> RateLimiterWorkload:
        workload = self.backend.workload
        if workload is None or workload.url is None:
            raise ActionFailed("the clients are not running, so there is no rotation")
        return workload

    # -- nodes -----------------------------------------------------------------------------

    async def restart_node(self, p: Any) -> str:
        before = await self._status(p.node)
        await self._do("restarting", p.node, self.processes.restart)
        took = await self._node_answers(p.node)
        where = self.processes.ident(p.node) or self.processes.kind
        return f"restarted {p.node} (was {before}); {where} answered its health after {took:.2f} s"

    async def resume_node(self, p: Any) -> str:
        status = await self._status(p.node)
        if status == "running":
            return f"{p.node} was already running; nothing to resume"
        if status != "paused":
            raise ActionFailed(f"{p.node} is {status}, not paused: resume cannot help, restart it")
        await self._do("resuming", p.node, self.processes.resume)
        return f"resumed {p.node}; it is {await self._status(p.node)}"

    async def drain_node(self, p: Any) -> str:
        clients = self._clients()
        rotation = clients.rotation
        if p.node not in rotation:
            return f"{p.node} was already out of rotation (rotation: {', '.join(rotation)})"
        if len(rotation) == 1:
            raise ActionFailed(f"refusing to drain {p.node}: it is the last node in rotation")
        rotation = await clients.drain(p.node)
        return f"drained {p.node}; rotation is now {', '.join(rotation)}"

    async def undrain_node(self, p: Any) -> str:
        clients = self._clients()
        if p.node in clients.rotation:
            return f"{p.node} was already in rotation"
        rotation = await clients.undrain(p.node)
        return f"put {p.node} back in rotation; rotation is now {', '.join(rotation)}"

    async def reload_config(self, p: Any) -> str:
        data = await self._call(p.node, "POST", "/api/config/reload")
        return f"{p.node} reloaded its limits from the store: config v{data.get('version')}"

    async def clear_failpoint(self, p: Any) -> str:
        data = await self._call(p.node, "DELETE", f"/api/failpoints/{p.name}")
        text = f"cleared failpoint {p.name} on {p.node} (now {data.get(p.name)!r})"
        if p.name == "config_refresh_stuck":
            reload = await self._call(p.node, "POST", "/api/config/reload")
            text += f"; reloaded config v{reload.get('version')}"
        return text

    async def set_fail_mode(self, p: Any) -> str:
        data = await self._call(p.node, "PUT", "/api/fail_mode", {"mode": p.mode})
        return f"{p.node} now fails {data.get('fail_mode', p.mode)} when the store is unreachable"

    # -- store and keys --------------------------------------------------------------------

    async def restart_store(self, p: Any) -> str:
        before = await self._status(STORE_PROCESS)
        await self._do("restarting", STORE_PROCESS, self.processes.restart)
        return (
            f"restarted the store (was {before}); it answers again, empty: "
            "counters and limits set at runtime are gone"
        )

    async def resume_store(self, p: Any) -> str:
        status = await self._status(STORE_PROCESS)
        if status == "running":
            return "the store was already running; nothing to resume"
        if status != "paused":
            raise ActionFailed(f"the store is {status}, not paused: restart it instead")
        await self._do("resuming", STORE_PROCESS, self.processes.resume)
        return f"resumed the store; it is {await self._status(STORE_PROCESS)}"

    async def reset_counter(self, p: Any) -> str:
        node, _ = await self._call_any("POST", f"/api/counters/{quote(p.key, safe='')}/reset")
        return f"reset the window of {p.key!r} through {node}"

    async def set_limit(self, p: Any) -> str:
        body: dict[str, Any] = {"limit": p.limit}
        if p.window_ms is not None:
            body["window_ms"] = p.window_ms
        node, data = await self._call_any("PUT", f"/api/limits/{quote(p.key, safe='')}", body)
        return (
            f"set {p.key!r} to {data.get('limit')} per {data.get('window_ms')} ms through "
            f"{node} (config v{data.get('version')})"
        )


@dataclass(frozen=True, slots=True)
class _Def:
    """One action of the catalog, before it is bound to a cluster."""

    name: str
    description: str
    params: str  # which parameter model (see _Models)
    risk: Risk
    restores: tuple[str, ...]
    method: str
    timeout_s: float = 5.0
    needs: str = ""  # "process" or "balancer": what it cannot do without
    fixed_targets: tuple[str, ...] = ()
    effect: Effect = "fix"
    undo: str | None = None
    cause: str | None = None


ACTIONS: tuple[_Def, ...] = (
    _Def(
        "restart_node",
        "Stop a node (if it still runs) and start it again on the same port.",
        "node",
        "medium",
        ("node_down", "error_rate"),
        "restart_node",
        timeout_s=20.0,
        needs="process",
    ),
    _Def(
        "resume_node",
        "Resume a paused node (SIGCONT, or unpause its container) so it answers again.",
        "node",
        "low",
        ("node_down",),
        "resume_node",
        needs="process",
    ),
    _Def(
        "drain_node",
        "Take a node out of the load balancer's rotation (never the last one). A mitigation: "
        "traffic avoids the node, whatever is wrong with it stays wrong.",
        "node",
        "medium",
        ("latency_slo", "store_link_slow", "error_rate", "store_unreachable"),
        "drain_node",
        needs="balancer",
        effect="mitigate",
        undo="undrain_node",
        cause="node_serving",
    ),
    _Def(
        "undrain_node",
        "Put a drained node back into the load balancer's rotation.",
        "node",
        "low",
        (),
        "undrain_node",
        needs="balancer",
    ),
    _Def(
        "restart_store",
        "Restart the Valkey store on the same port; it comes back empty.",
        "none",
        "high",
        ("store_unreachable",),
        "restart_store",
        timeout_s=20.0,
        needs="process",
        fixed_targets=("store",),
    ),
    _Def(
        "resume_store",
        "Resume a paused store (SIGCONT, or unpause its container).",
        "none",
        "medium",
        ("store_unreachable",),
        "resume_store",
        needs="process",
        fixed_targets=("store",),
    ),
    _Def(
        "reload_config",
        "Make a node reload its limits from the store now.",
        "node",
        "low",
        ("config_drift",),
        "reload_config",
    ),
    _Def(
        "clear_failpoint",
        "Put a node's failpoint back to its default (a stuck refresh also reloads).",
        "failpoint",
        "low",
        ("over_limit", "config_drift"),
        "clear_failpoint",
    ),
    _Def(
        "reset_counter",
        "Empty one key's sliding window in the store, through any running node.",
        "key",
        "medium",
        ("over_limit",),
        "reset_counter",
    ),
    _Def(
        "set_limit",
        "Change one key's limit (and window) in the store, through any running node.",
        "limit",
        "high",
        (),
        "set_limit",
    ),
    _Def(
        "set_fail_mode",
        "Choose whether a node allows (open) or rejects (closed) checks without a store.",
        "fail_mode",
        "high",
        ("over_limit",),
        "set_fail_mode",
    ),
)
ACTION_NAMES: tuple[str, ...] = tuple(d.name for d in ACTIONS)
# The parameters that name a target, per parameter model.
_TARGET_PARAMS = {
    "node": ("node",),
    "failpoint": ("node",),
    "fail_mode": ("node",),
    "key": ("key",),
    "limit": ("key",),
}


def build_catalog(backend: Backend, processes: ProcessBackend | None) -> ActionCatalog:
    """Every action the agent may propose for this cluster, with its parameters and risk; what
    this placement cannot do is listed as unavailable, with the reason."""
    acts = RateLimiterActions(backend, processes)
    models = _Models(backend.node_names)
    param_models: dict[str, type[BaseModel]] = {
        "node": models.node,
        "failpoint": models.failpoint,
        "fail_mode": models.fail_mode,
        "key": models.key,
        "limit": models.limit,
        "none": NoParams,
    }
    specs: list[ActionSpec] = []
    unavailable: dict[str, str] = {}
    for d in ACTIONS:
        if d.needs == "process" and processes is None:
            unavailable[d.name] = NO_PROCESS
            continue
        if d.needs == "balancer" and backend.workload is None:
            unavailable[d.name] = NO_BALANCER
            continue
        run: Callable[[Any], Awaitable[str]] = getattr(acts, d.method)
        specs.append(
            ActionSpec(
                d.name,
                d.description,
                param_models[d.params],
                d.risk,
                d.restores,
                d.timeout_s,
                run,
                target_params=_TARGET_PARAMS.get(d.params, ()),
                fixed_targets=d.fixed_targets,
                effect=d.effect,
                undo=d.undo,
                cause=d.cause,
            )
        )
    return ActionCatalog(tuple(specs), unavailable)
