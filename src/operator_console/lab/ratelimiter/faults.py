"""Real faults for the rate limiter cluster: signals, link proxies and node failpoints."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import httpx

if TYPE_CHECKING:
    from operator_console.lab.ratelimiter.cluster import RateLimiterCluster

log = logging.getLogger(__name__)

STORE_TARGET = "store"
DEFAULT_LATENCY_MS = 300
DEFAULT_STUCK_KEY = "user:hot"
_RETRY_PAUSE_S = 0.1


class FaultError(RuntimeError):
    """A fault could not be injected; the message names the target and the reason."""


class ClusterFault:
    """Base of every injector: a kind, a target and validated parameters."""

    kind: str
    on_store: ClassVar[bool] = False
    param_names: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self, cluster: RateLimiterCluster, target: str, params: Mapping[str, Any] | None = None
    ) -> None:
        self.cluster = cluster
        self.target = target
        self.params: dict[str, Any] = dict(params or {})

    def __repr__(self) -> str:
        return f"{type(self).__name__}(target={self.target!r}, params={self.params!r})"

    def describe(self) -> str:
        raise NotImplementedError

    async def inject(self) -> None:
        raise NotImplementedError

    async def clear(self) -> None:
        raise NotImplementedError

    # The HTTP helpers below raise FaultError with the node and the reason.

    async def _node_request(
        self,
        node: str,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        attempts: int = 3,
    ) -> httpx.Response:
        """One call to a node's API; retried briefly on 503 (a stale store connection)."""
        url = f"{self.cluster.node_url(node)}{path}"
        for attempt in range(1, attempts + 1):
            try:
                response = await self.cluster.http.request(method, url, json=body, timeout=3.0)
            except httpx.HTTPError as exc:
                if attempt < attempts and isinstance(exc, httpx.ConnectError | httpx.ReadError):
                    await asyncio.sleep(_RETRY_PAUSE_S)
                    continue
                raise FaultError(f"{self.kind}: {method} {url} failed: {exc!r}") from exc
            if response.status_code == 503 and attempt < attempts:
                await asyncio.sleep(_RETRY_PAUSE_S)
                continue
            if response.status_code >= 400:
                raise FaultError(
                    f"{self.kind}: {method} {url} answered {response.status_code}: "
                    f"{response.text[:200]}"
                )
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    async def _best_effort(self, node: str, method: str, path: str) -> None:
        """For clear(): a node that was restarted or is gone has already lost the fault."""
        if not self.cluster.running or self.cluster.node_status(node) != "running":
            return
        try:
            await self._node_request(node, method, path)
        except FaultError as exc:
            log.warning("clearing %s on %s: %s", self.kind, node, exc)


class NodeKill(ClusterFault):
    kind = "node_kill"

    def describe(self) -> str:
        return f"SIGKILL {self.target}'s process group; it stays down until cleared"

    async def inject(self) -> None:
        self.cluster.kill_node(self.target)

    async def clear(self) -> None:
        if self.cluster.running and self.cluster.node_status(self.target) not in (
            "running",
            "paused",
        ):
            await self.cluster.restart_node(self.target)


class NodePause(ClusterFault):
    kind = "node_pause"

    def describe(self) -> str:
        return f"SIGSTOP {self.target}: it keeps its port open but answers nothing"

    async def inject(self) -> None:
        self.cluster.pause_node(self.target)

    async def clear(self) -> None:
        if self.cluster.node_status(self.target) == "paused":
            self.cluster.resume_node(self.target)


class StorePause(ClusterFault):
    kind = "store_pause"
    on_store = True

    def describe(self) -> str:
        return "SIGSTOP the Valkey store: every node loses its shared counters"

    async def inject(self) -> None:
        self.cluster.pause_store()

    async def clear(self) -> None:
        if self.cluster.store_status() == "paused":
            self.cluster.resume_store()


class _LinkFault(ClusterFault):
    """Faults on a node's proxy; clearing puts the link back to clean."""

    async def clear(self) -> None:
        try:
            proxy = self.cluster.proxy(self.target)
            await proxy.restore()
        except RuntimeError:  # the cluster was stopped meanwhile
            return


class LinkLatency(_LinkFault):
    kind = "link_latency"
    param_names = ("ms",)

    @property
    def ms(self) -> float:
        return float(self.params.get("ms", DEFAULT_LATENCY_MS))

    def describe(self) -> str:
        return f"add {self.ms:g} ms each way on {self.target}'s link to the store"

    async def inject(self) -> None:
        await self.cluster.proxy(self.target).set_latency(self.ms)


class LinkCut(_LinkFault):
    kind = "link_cut"

    def describe(self) -> str:
        return f"cut {self.target}'s link to the store: open connections drop, new ones fail"

    async def inject(self) -> None:
        await self.cluster.proxy(self.target).cut()


class ClockSkew(ClusterFault):
    kind = "clock_skew"
    param_names = ("ms",)

    @property
    def ms(self) -> int:
        return int(self.params.get("ms", 3 * self.cluster.window_ms))

    def describe(self) -> str:
        return f"run {self.target}'s clock {self.ms} ms ahead of the others"

    async def inject(self) -> None:
        await self._node_request(
            self.target, "PUT", "/api/failpoints/clock_skew_ms", {"value": self.ms}
        )

    async def clear(self) -> None:
        await self._best_effort(self.target, "DELETE", "/api/failpoints/clock_skew_ms")


class ConfigStuck(ClusterFault):
    kind = "config_stuck"
    param_names = ("key", "limit", "window_ms")

    @property
    def key(self) -> str:
        return str(self.params.get("key", DEFAULT_STUCK_KEY))

    @property
    def limit(self) -> int:
        return int(self.params.get("limit", max(1, self.cluster.default_limit // 2)))

    def describe(self) -> str:
        return (
            f"freeze {self.target}'s config refresh, then set {self.key!r} to "
            f"{self.limit} through another node; {self.target} never sees the change"
        )

    def _other_node(self) -> str:
        others = [
            n
            for n in self.cluster.node_names
            if n != self.target and self.cluster.node_status(n) == "running"
        ]
        if not others:
            raise FaultError(f"{self.kind}: no other running node to change the limit through")
        return others[0]

    async def inject(self) -> None:
        other = self._other_node()
        await self._node_request(
            self.target, "PUT", "/api/failpoints/config_refresh_stuck", {"value": True}
        )
        # Let a refresh that was already under way finish before the config moves.
        await asyncio.sleep(0.05)
        body: dict[str, Any] = {"limit": self.limit}
        if "window_ms" in self.params:
            body["window_ms"] = int(self.params["window_ms"])
        try:
            await self._node_request(other, "PUT", f"/api/limits/{self.key}", body)
        except FaultError:
            await self._best_effort(self.target, "DELETE", "/api/failpoints/config_refresh_stuck")
            raise

    async def clear(self) -> None:
        await self._best_effort(self.target, "DELETE", "/api/failpoints/config_refresh_stuck")
        await self._best_effort(self.target, "POST", "/api/config/reload")


_FAULTS: dict[str, type[ClusterFault]] = {
    cls.kind: cls
    for cls in (NodeKill, NodePause, StorePause, LinkLatency, LinkCut, ClockSkew, ConfigStuck)
}
FAULT_KINDS: tuple[str, ...] = tuple(_FAULTS)


def _non_negative_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError
    return float(value)


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError
    return value


def _any_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError
    return value


def _key(value: Any) -> str:
    if not isinstance(value, str) or not value or value == "__default__":
        raise ValueError
    return value


_PARAM_CHECKS: dict[tuple[str, str], tuple[Callable[[Any], Any], str]] = {
    ("link_latency", "ms"): (_non_negative_number, "a number of milliseconds >= 0"),
    ("clock_skew", "ms"): (_any_int, "an integer number of milliseconds"),
    ("config_stuck", "key"): (_key, "a non-empty key name"),
    ("config_stuck", "limit"): (_positive_int, "an integer > 0"),
    ("config_stuck", "window_ms"): (_positive_int, "an integer number of milliseconds > 0"),
}


def make_fault(
    cluster: RateLimiterCluster, kind: str, target: str | None, params: Mapping[str, Any]
) -> ClusterFault:
    """Build one fault; ValueError names the valid kinds, targets or parameters."""
    cls = _FAULTS.get(kind)
    if cls is None:
        raise ValueError(f"unknown fault kind {kind!r} (valid: {', '.join(FAULT_KINDS)})")
    nodes = cluster.node_names
    if cls.on_store:
        valid = [STORE_TARGET]
        default = STORE_TARGET
    else:
        valid = nodes
        default = nodes[1] if len(nodes) > 1 else nodes[0]
    chosen = default if target is None else target
    if chosen not in valid:
        raise ValueError(
            f"fault {kind!r} cannot target {chosen!r} (valid targets: {', '.join(valid)})"
        )
    if kind == "config_stuck" and len(nodes) < 2:
        raise ValueError("fault 'config_stuck' needs at least 2 nodes")
    checked: dict[str, Any] = {}
    for name, value in dict(params).items():
        if name not in cls.param_names:
            allowed = ", ".join(cls.param_names) or "none"
            raise ValueError(f"fault {kind!r} has no parameter {name!r} (parameters: {allowed})")
        check, expected = _PARAM_CHECKS[(kind, name)]
        try:
            checked[name] = check(value)
        except ValueError:
            raise ValueError(f"fault {kind!r} parameter {name!r} must be {expected}") from None
    return cls(cluster=cluster, target=chosen, params=checked)
