"""What the operator may do to the rate limiter: each action really acts on the lab."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import quote

import httpx
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, create_model

from operator_console.actions.catalog import ActionCatalog, ActionSpec, Risk

if TYPE_CHECKING:
    from operator_console.lab.ratelimiter.cluster import RateLimiterCluster
    from operator_console.subjects.ratelimiter import RateLimiterWorkload

FailpointName = Literal["clock_skew_ms", "config_refresh_stuck"]
FailMode = Literal["open", "closed"]
RESERVED_KEY = "__default__"
MAX_KEY_LENGTH = 512
_HTTP_TIMEOUT_S = 3.0
_HTTP_ATTEMPTS = 2


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
    """The action bodies: cluster signals and restarts, the nodes' HTTP API, the load balancer."""

    def __init__(self, cluster: RateLimiterCluster, workload: RateLimiterWorkload) -> None:
        self.cluster = cluster
        self.workload = workload

    # -- helpers ---------------------------------------------------------------------------

    async def _call(
        self, node: str, method: str, path: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """One call to a node's API; retried once on a refused connection or a 503."""
        url = f"{self.cluster.node_url(node)}{path}"
        for attempt in range(1, _HTTP_ATTEMPTS + 1):
            try:
                response = await self.cluster.http.request(
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
        for node in self.cluster.node_names:
            status = self.cluster.node_status(node)
            if status != "running":
                failures.append(f"{node} {status}")
                continue
            try:
                return node, await self._call(node, method, path, body)
            except ActionFailed as exc:
                failures.append(str(exc))
        raise ActionFailed(f"{method} {path}: no node could do it ({'; '.join(failures)})")

    def _generator(self) -> Any:
        generator = self.workload.generator
        if generator is None:
            raise ActionFailed("the load generator is not running, so there is no rotation")
        return generator

    # -- nodes -----------------------------------------------------------------------------

    async def restart_node(self, p: Any) -> str:
        before = self.cluster.node_status(p.node)
        await self.cluster.restart_node(p.node)
        pid = self.cluster.supervisor.pid(p.node)
        return f"restarted {p.node} (was {before}); pid {pid} answers its health endpoint"

    async def resume_node(self, p: Any) -> str:
        status = self.cluster.node_status(p.node)
        if status == "running":
            return f"{p.node} was already running; nothing to resume"
        if status != "paused":
            raise ActionFailed(f"{p.node} is {status}, not paused: resume cannot help, restart it")
        self.cluster.resume_node(p.node)
        return f"sent SIGCONT to {p.node}; it is {self.cluster.node_status(p.node)}"

    async def drain_node(self, p: Any) -> str:
        generator = self._generator()
        rotation = generator.rotation
        if p.node not in rotation:
            return f"{p.node} was already out of rotation (rotation: {', '.join(rotation)})"
        if len(rotation) == 1:
            raise ActionFailed(f"refusing to drain {p.node}: it is the last node in rotation")
        generator.drain(p.node)
        return f"drained {p.node}; rotation is now {', '.join(generator.rotation)}"

    async def undrain_node(self, p: Any) -> str:
        generator = self._generator()
        if p.node in generator.rotation:
            return f"{p.node} was already in rotation"
        generator.undrain(p.node)
        return f"put {p.node} back in rotation; rotation is now {', '.join(generator.rotation)}"

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
        before = self.cluster.store_status()
        await self.cluster.restart_store()
        return (
            f"restarted the store (was {before}); it answers again, empty: "
            "counters and limits set at runtime are gone"
        )

    async def resume_store(self, p: Any) -> str:
        status = self.cluster.store_status()
        if status == "running":
            return "the store was already running; nothing to resume"
        if status != "paused":
            raise ActionFailed(f"the store is {status}, not paused: restart it instead")
        self.cluster.resume_store()
        return f"sent SIGCONT to the store; it is {self.cluster.store_status()}"

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


def build_catalog(cluster: RateLimiterCluster, workload: RateLimiterWorkload) -> ActionCatalog:
    """Every action the agent may propose for this cluster, with its parameters and risk."""
    acts = RateLimiterActions(cluster, workload)
    models = _Models(cluster.node_names)

    def spec(
        name: str,
        description: str,
        params: type[BaseModel],
        risk: Risk,
        restores: tuple[str, ...],
        run: Callable[[Any], Awaitable[str]],
        timeout_s: float = 5.0,
    ) -> ActionSpec:
        return ActionSpec(name, description, params, risk, restores, timeout_s, run)

    return ActionCatalog(
        [
            spec(
                "restart_node",
                "Stop a node (if it still runs) and start it again on the same port.",
                models.node,
                "medium",
                ("node_down", "error_rate"),
                acts.restart_node,
                timeout_s=20.0,
            ),
            spec(
                "resume_node",
                "Send SIGCONT to a paused (SIGSTOPped) node so it answers again.",
                models.node,
                "low",
                ("node_down",),
                acts.resume_node,
            ),
            spec(
                "drain_node",
                "Take a node out of the load balancer's rotation (never the last one).",
                models.node,
                "medium",
                ("latency_slo", "error_rate", "store_unreachable"),
                acts.drain_node,
            ),
            spec(
                "undrain_node",
                "Put a drained node back into the load balancer's rotation.",
                models.node,
                "low",
                (),
                acts.undrain_node,
            ),
            spec(
                "restart_store",
                "Restart the Valkey store on the same port; it comes back empty.",
                NoParams,
                "high",
                ("store_unreachable",),
                acts.restart_store,
                timeout_s=20.0,
            ),
            spec(
                "resume_store",
                "Send SIGCONT to a paused (SIGSTOPped) store.",
                NoParams,
                "medium",
                ("store_unreachable",),
                acts.resume_store,
            ),
            spec(
                "reload_config",
                "Make a node reload its limits from the store now.",
                models.node,
                "low",
                ("config_drift",),
                acts.reload_config,
            ),
            spec(
                "clear_failpoint",
                "Put a node's failpoint back to its default (a stuck refresh also reloads).",
                models.failpoint,
                "low",
                ("over_limit", "config_drift"),
                acts.clear_failpoint,
            ),
            spec(
                "reset_counter",
                "Empty one key's sliding window in the store, through any running node.",
                models.key,
                "medium",
                ("over_limit",),
                acts.reset_counter,
            ),
            spec(
                "set_limit",
                "Change one key's limit (and window) in the store, through any running node.",
                models.limit,
                "high",
                (),
                acts.set_limit,
            ),
            spec(
                "set_fail_mode",
                "Choose whether a node allows (open) or rejects (closed) checks without a store.",
                models.fail_mode,
                "high",
                ("over_limit",),
                acts.set_fail_mode,
            ),
        ]
    )
