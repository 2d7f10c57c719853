"""How the subject reaches a rate limiter cluster: the local lab it started (processes, link
proxies, logs, a load balancer), a compose stack (the nodes' HTTP API and their containers), or
a cluster it attached to (only the nodes' own HTTP API)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from operator_console.contract import ProcessBackend, ProcessControlError, SpecError

if TYPE_CHECKING:
    from operator_console.lab.ratelimiter.cluster import RateLimiterCluster
    from operator_console.subjects.ratelimiter.workload import RateLimiterWorkload

NO_PROCESS = (
    "needs a process backend: a cluster the console started, or a compose stack "
    "(watch ratelimiter --compose DIR)"
)
STORE_PROCESS = "store"
NO_BALANCER = "needs the console's own load generator as the clients' load balancer"


class Backend(Protocol):
    """What tools, actions and the observer may use; None where this placement cannot know."""

    @property
    def node_names(self) -> list[str]: ...

    def node_url(self, name: str) -> str: ...

    @property
    def store_url(self) -> str: ...

    @property
    def http(self) -> httpx.AsyncClient: ...

    def node_status(self, name: str) -> str | None:
        """running, paused, killed, exited, stopped; None when there is no process backend."""
        ...

    def store_status(self) -> str | None: ...

    def store_pid(self) -> int | None: ...

    async def link(self, name: str) -> dict[str, Any] | None:
        """The node's link proxy to the store (latency_ms, cut), where the console runs one."""
        ...

    async def log(self, process: str, lines: int) -> tuple[str, str] | None:
        """Where the log is and its last lines, where the console can read it."""
        ...

    @property
    def config_refresh_s(self) -> float | None: ...

    @property
    def processes(self) -> bool:
        """Whether processes can be restarted, paused and resumed."""
        ...

    @property
    def workload(self) -> RateLimiterWorkload | None:
        """The console's own clients (and load balancer), when it runs them."""
        ...


class LocalBackend:
    """The lab the console started: every process, proxy and log is at hand."""

    processes = True

    def __init__(self, cluster: RateLimiterCluster, workload: RateLimiterWorkload | None) -> None:
        self.cluster = cluster
        self.workload = workload

    @property
    def node_names(self) -> list[str]:
        return self.cluster.node_names

    def node_url(self, name: str) -> str:
        return self.cluster.node_url(name)

    @property
    def store_url(self) -> str:
        return self.cluster.store.url

    @property
    def http(self) -> httpx.AsyncClient:
        return self.cluster.http

    def node_status(self, name: str) -> str | None:
        try:
            return self.cluster.node_status(name)
        except (KeyError, LookupError):
            return None

    def store_status(self) -> str | None:
        return self.cluster.store_status()

    def store_pid(self) -> int | None:
        return self.cluster.store.pid

    async def link(self, name: str) -> dict[str, Any] | None:
        try:
            return await self.cluster.proxy(name).state()
        except RuntimeError:  # ProxyHostError is one: the lab is stopping
            return None

    async def log(self, process: str, lines: int) -> tuple[str, str] | None:
        name = self.cluster.store.name if process == "store" else process
        supervisor = self.cluster.supervisor
        tail = await asyncio.to_thread(supervisor.log_tail, name, lines)
        return str(supervisor.log_path(name)), tail

    @property
    def config_refresh_s(self) -> float | None:
        return self.cluster.config_refresh_s


class AttachedBackend:
    """A cluster the console did not start: nodes by URL, the store by URL, nothing else."""

    processes = False
    workload = None
    config_refresh_s = None

    def __init__(self, nodes: Mapping[str, str], store_url: str, timeout_s: float = 3.0) -> None:
        self._nodes = dict(nodes)
        self._store_url = store_url
        self._http: httpx.AsyncClient | None = None
        self._timeout_s = timeout_s

    @classmethod
    def from_endpoints(cls, endpoints: Mapping[str, Any]) -> AttachedBackend:
        """From the JSON `lab up` prints: {"store": {"url": ...}, "nodes": {name: {"url": ...}}}."""
        nodes = endpoints.get("nodes")
        if not isinstance(nodes, Mapping) or not nodes:
            raise SpecError("nodes", 'give at least one node: {"nodes": {"node-1": {"url": ...}}}')
        urls: dict[str, str] = {}
        for name, node in nodes.items():
            url = node.get("url") if isinstance(node, Mapping) else node
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                raise SpecError(f"nodes.{name}.url", "an http:// or https:// URL is needed")
            urls[str(name)] = url.rstrip("/")
        store = endpoints.get("store")
        store_url = store.get("url") if isinstance(store, Mapping) else store
        if not isinstance(store_url, str) or not store_url.startswith(("redis://", "rediss://")):
            raise SpecError("store.url", "a redis:// URL of the shared store is needed")
        return cls(urls, store_url)

    @property
    def node_names(self) -> list[str]:
        return list(self._nodes)

    def node_url(self, name: str) -> str:
        try:
            return self._nodes[name]
        except KeyError:
            raise KeyError(f"unknown node {name!r} (nodes: {', '.join(self._nodes)})") from None

    @property
    def store_url(self) -> str:
        return self._store_url

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self._timeout_s)
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def node_status(self, name: str) -> str | None:
        return None

    def store_status(self) -> str | None:
        return None

    def store_pid(self) -> int | None:
        return None

    async def link(self, name: str) -> dict[str, Any] | None:
        return None

    async def log(self, process: str, lines: int) -> tuple[str, str] | None:
        return None


class StackBackend(AttachedBackend):
    """A compose stack: the nodes' HTTP API and the store by URL, and every process (nodes and
    store) as a container the backend can read, restart and resume."""

    processes = True

    def __init__(self, nodes: Mapping[str, str], store_url: str, processes: ProcessBackend) -> None:
        super().__init__(nodes, store_url)
        self.process_backend = processes

    @classmethod
    def on(cls, attached: AttachedBackend, processes: ProcessBackend) -> StackBackend:
        return cls(
            {n: attached.node_url(n) for n in attached.node_names}, attached.store_url, processes
        )

    def node_status(self, name: str) -> str | None:
        return self.process_backend.status(name)

    def store_status(self) -> str | None:
        return self.process_backend.status(STORE_PROCESS)

    async def log(self, process: str, lines: int) -> tuple[str, str] | None:
        try:
            return await self.process_backend.logs(process, lines)
        except ProcessControlError:
            return None
