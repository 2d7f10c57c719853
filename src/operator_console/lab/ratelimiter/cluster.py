"""The local rate limiter cluster: one Valkey store and N nodes, each behind its own link proxy."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from operator_console.lab.ports import free_ports
from operator_console.lab.proxy_host import Link, ProxyHost
from operator_console.lab.ratelimiter.faults import FAULT_KINDS, ClusterFault, make_fault
from operator_console.lab.ratelimiter.store import ValkeyStore
from operator_console.lab.supervisor import ManagedProcess, Supervisor, UnknownProcessError

NODE_MODULE = "operator_console.lab.ratelimiter.node"
CLIENTS_MODULE = "operator_console.lab.ratelimiter.clients"
CLIENTS = "clients"
HOST = "127.0.0.1"
_PROBE_TIMEOUT_S = 0.5
_NODE_START_TIMEOUT_S = 20.0


class RateLimiterCluster:
    """Starts, breaks and stops the rate limiter: node-N reaches the store only via proxy N."""

    def __init__(
        self,
        run_dir: Path,
        *,
        nodes: int = 3,
        default_limit: int = 100,
        window_ms: int = 5000,
        fail_mode: str = "open",
        config_refresh_s: float = 1.0,
        heartbeat_s: float = 1.0,
    ) -> None:
        if nodes < 1:
            raise ValueError(f"nodes must be >= 1, got {nodes}")
        if fail_mode not in ("open", "closed"):
            raise ValueError(f"fail_mode must be 'open' or 'closed', got {fail_mode!r}")
        self.run_dir = Path(run_dir)
        self.nodes = nodes
        self.default_limit = default_limit
        self.window_ms = window_ms
        self.fail_mode = fail_mode
        self.config_refresh_s = config_refresh_s
        self.heartbeat_s = heartbeat_s
        self._supervisor = Supervisor(self.run_dir)
        self._store = ValkeyStore(self._supervisor, self.run_dir, host=HOST)
        self._node_names = [f"node-{i}" for i in range(1, nodes + 1)]
        self._links = ProxyHost(self._supervisor)
        self._proxies: dict[str, Link] = {}
        self._ports: dict[str, int] = {}
        self._http: httpx.AsyncClient | None = None
        self._clients_url: str | None = None
        self._running = False

    # ------------------------------------------------------------- properties

    @property
    def supervisor(self) -> Supervisor:
        return self._supervisor

    @property
    def store(self) -> ValkeyStore:
        return self._store

    @property
    def node_names(self) -> list[str]:
        return list(self._node_names)

    @property
    def running(self) -> bool:
        return self._running

    def node_port(self, name: str) -> int:
        self._check_node(name)
        try:
            return self._ports[name]
        except KeyError:
            raise RuntimeError(f"{name} has no port yet: start the cluster first") from None

    def node_url(self, name: str) -> str:
        return f"http://{HOST}:{self.node_port(name)}"

    def proxy(self, name: str) -> Link:
        self._check_node(name)
        try:
            return self._proxies[name]
        except KeyError:
            raise RuntimeError(f"{name} has no link proxy yet: start the cluster first") from None

    @property
    def http(self) -> httpx.AsyncClient:
        """One pooled HTTP client for probing and steering nodes; closed by stop()."""
        if self._http is None or self._http.is_closed:
            self._http = httpx.AsyncClient(timeout=2.0, trust_env=False)
        return self._http

    def _check_node(self, name: str) -> None:
        if name not in self._node_names:
            raise ValueError(f"unknown node {name!r} (nodes: {', '.join(self._node_names)})")

    # ---------------------------------------------------------------- the Lab

    async def start(self) -> None:
        """Store first, then one proxy per node, then every node in parallel."""
        if self._running:
            return
        try:
            await self._store.start()
            upstream = f"{HOST}:{self._store.port}"
            self._proxies = await self._links.start({name: upstream for name in self._node_names})
            ports = free_ports(len(self._node_names), HOST)
            for name, port in zip(self._node_names, ports, strict=True):
                self._ports[name] = port
            await asyncio.gather(*(self._start_node(name) for name in self._node_names))
        except BaseException:
            await self._teardown()
            raise
        self._running = True

    async def stop(self) -> None:
        """Nodes, then proxies, then the store; no child process survives."""
        self._running = False
        await self._teardown()

    async def _teardown(self) -> None:
        sup = self._supervisor
        if CLIENTS in sup.names():  # the clients first, so no request meets a stopping node
            with contextlib.suppress(Exception):
                await sup.stop(CLIENTS)
        self._clients_url = None
        nodes = [n for n in self._node_names if n in sup.names()]
        await asyncio.gather(*(sup.stop(n) for n in nodes), return_exceptions=True)
        self._proxies = {}
        with contextlib.suppress(Exception):
            await self._links.stop()
        if self._store.name in sup.names():
            with contextlib.suppress(Exception):
                await self._store.stop()
        sup.kill_all()
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def endpoints(self) -> dict[str, Any]:
        nodes: dict[str, Any] = {}
        for name in self._node_names:
            if name not in self._ports:
                continue
            nodes[name] = {
                "url": self.node_url(name),
                "pid": self._pid(name),
                "proxy_port": self._proxies[name].port if name in self._proxies else None,
            }
        data: dict[str, Any] = {
            "store": {"url": self._store.url, "pid": self._store.pid},
            "nodes": nodes,
        }
        if self._clients_url is not None:
            data["clients"] = {"url": self._clients_url, "pid": self._pid(CLIENTS)}
        return data

    async def start_clients(
        self,
        *,
        rate: float,
        keys: int,
        hot_keys: Mapping[str, float],
        timeout_s: float,
        seed: int | None = None,
    ) -> str:
        """Start the clients process (load generator and balancer) and return its API's URL."""
        (port,) = free_ports(1, HOST)
        url = f"http://{HOST}:{port}"
        argv = [
            sys.executable,
            "-m",
            CLIENTS_MODULE,
            "--host",
            HOST,
            "--port",
            str(port),
            "--targets",
            json.dumps({name: self.node_url(name) for name in self._node_names}),
            "--rate",
            str(rate),
            "--keys",
            str(keys),
            "--hot-keys",
            json.dumps(dict(hot_keys)),
            "--timeout-s",
            str(timeout_s),
            *(["--seed", str(seed)] if seed is not None else []),
        ]

        async def answers() -> bool:
            try:
                response = await self.http.get(f"{url}/api/health", timeout=_PROBE_TIMEOUT_S)
            except httpx.HTTPError:
                return False
            return response.status_code == 200

        await self._supervisor.start(CLIENTS, argv, ready=answers, timeout=_NODE_START_TIMEOUT_S)
        self._clients_url = url
        return url

    def about(self) -> str:
        return (
            f"{self.nodes} rate limiter nodes and one valkey-server, local processes in "
            f"{self.run_dir}"
        )

    def fault_kinds(self) -> Sequence[str]:
        return FAULT_KINDS

    def make_fault(self, kind: str, target: str | None, params: Mapping[str, Any]) -> ClusterFault:
        """Build a fault; ValueError names the valid kinds, targets or parameters."""
        return make_fault(self, kind, target, params)

    # -------------------------------------------------------------- the nodes

    def node_argv(self, name: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            NODE_MODULE,
            "--name",
            name,
            "--host",
            HOST,
            "--port",
            str(self.node_port(name)),
            "--store-url",
            f"redis://{HOST}:{self.proxy(name).port}",
            "--fail-mode",
            self.fail_mode,
            "--default-limit",
            str(self.default_limit),
            "--default-window-ms",
            str(self.window_ms),
            "--config-refresh-s",
            str(self.config_refresh_s),
            "--heartbeat-s",
            str(self.heartbeat_s),
        ]

    async def _start_node(self, name: str) -> ManagedProcess:
        url = f"{self.node_url(name)}/api/health"

        async def answers() -> bool:
            try:
                await self.http.get(url, timeout=_PROBE_TIMEOUT_S)
            except httpx.HTTPError:
                return False
            return True

        return await self._supervisor.start(
            name, self.node_argv(name), ready=answers, timeout=_NODE_START_TIMEOUT_S
        )

    def _pid(self, name: str) -> int | None:
        try:
            return self._supervisor.pid(name)
        except UnknownProcessError:
            return None

    async def restart_node(self, name: str) -> None:
        """Start the node again on the same port (stopping it first if it still runs)."""
        self._check_node(name)
        if name in self._supervisor.names():
            await self._supervisor.restart(name)
        else:
            await self._start_node(name)

    def kill_node(self, name: str) -> None:
        self._check_node(name)
        self._supervisor.kill(name)

    def pause_node(self, name: str) -> None:
        self._check_node(name)
        self._supervisor.pause(name)

    def resume_node(self, name: str) -> None:
        self._check_node(name)
        self._supervisor.resume(name)

    def node_status(self, name: str) -> str:
        """running, paused, killed, exited or stopped (stopped before the first start)."""
        self._check_node(name)
        try:
            return self._supervisor.status(name)
        except UnknownProcessError:
            return "stopped"

    # -------------------------------------------------------------- the store

    def pause_store(self) -> None:
        self._store.pause()

    def resume_store(self) -> None:
        self._store.resume()

    async def restart_store(self) -> None:
        """Start the store again on the same port; it comes back empty (no persistence)."""
        if self._store.name in self._supervisor.names():
            await self._store.restart()
        else:
            await self._store.start()

    def store_status(self) -> str:
        return self._store.status()
