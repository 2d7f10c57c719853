"""How the subject reaches an etcd cluster: the local lab it started (processes, peer proxies,
logs, its own clients' ledger), a compose stack's containers, or a cluster it attached to (only
etcd's own client API)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from operator_console.contract import ProcessBackend, ProcessControlError
from operator_console.lab.etcd.client import ClientTLS, EtcdClient

if TYPE_CHECKING:
    from operator_console.lab.etcd.cluster import EtcdCluster
    from operator_console.subjects.etcd.workload import EtcdTraffic

NO_PROCESS = (
    "needs a process backend: a cluster the console started, or a compose stack "
    "(watch etcd --compose DIR)"
)
DEFAULT_TIMEOUT_S = 2.0
REFRESH_TIMEOUT_S = 2.0


class EtcdBackend:
    """Clients for every member; with a process backend (the local lab's processes or a
    stack's containers) their states, restarts and logs; the local lab's peer links."""

    def __init__(
        self,
        names: Sequence[str],
        urls: Callable[[], Mapping[str, str]],
        *,
        tls: ClientTLS | None = None,
        username: str | None = None,
        password: str | None = None,
        cluster: EtcdCluster | None = None,
        traffic: EtcdTraffic | None = None,
        processes: ProcessBackend | None = None,
    ) -> None:
        self._names = list(names)
        self._urls = urls  # known once the members run (the lab picks ports at start)
        self._tls = tls
        self._credentials = (username, password)
        self.cluster = cluster
        self.traffic = traffic
        self.process_backend = processes
        self._clients: dict[str, EtcdClient] = {}
        # One action at a time per member (two tickets may ask to restart the same one).
        self._locks: dict[str, asyncio.Lock] = {}

    def __repr__(self) -> str:
        return f"EtcdBackend(members={self.member_names}, processes={self.processes})"

    @property
    def processes(self) -> bool:
        """Whether members can be restarted, paused and resumed (local processes or containers)."""
        return self.process_backend is not None

    @property
    def process_kind(self) -> str:
        """'process' or 'container', for texts; 'process' without a backend."""
        return self.process_backend.kind if self.process_backend is not None else "process"

    @property
    def member_names(self) -> list[str]:
        return list(self._names)

    def client_url(self, name: str) -> str:
        if name not in self._names:
            raise ValueError(f"unknown member {name!r} (members: {', '.join(self._names)})")
        return self._urls()[name]

    def client(self, name: str) -> EtcdClient:
        """One pooled client per member; the credentials stay inside it."""
        client = self._clients.get(name)
        if client is None:
            username, password = self._credentials
            client = EtcdClient(
                self.client_url(name),
                tls=self._tls,
                username=username,
                password=password,
                timeout=DEFAULT_TIMEOUT_S,
            )
            self._clients[name] = client
        return client

    def lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()

    # ------------------------------------------------- with a process backend

    async def refresh_processes(self) -> None:
        """Read the members' process states again (containers: one call to the engine)."""
        if self.process_backend is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REFRESH_TIMEOUT_S):
                    await self.process_backend.refresh()

    def process_status(self, name: str) -> str | None:
        """running, paused, killed, exited or stopped; None without a process backend."""
        if self.process_backend is None:
            return None
        return self.process_backend.status(name)

    def pid(self, name: str) -> int | None:
        """The member's pid, for the local lab's processes."""
        if self.cluster is None:
            return None
        member = self.cluster.endpoints()["members"].get(name) or {}
        pid = member.get("pid")
        return int(pid) if pid else None

    def where(self, name: str) -> str | None:
        """How a person finds the member's process: 'pid 4242' or 'container 3f2a... (name)'."""
        if self.process_backend is None:
            return None
        return self.process_backend.ident(name)

    async def log(self, name: str, lines: int) -> tuple[str, str] | None:
        """Where the member's log is and its last lines, with a process backend."""
        if self.process_backend is None:
            return None
        try:
            return await self.process_backend.logs(name, lines)
        except (ProcessControlError, LookupError, OSError):
            return None

    # ------------------------------------------------------- the local lab only

    def peer_links(self, name: str) -> dict[str, Any] | None:
        """The member's peer proxy as the lab set it (partitioned, latency_ms), if it has one."""
        if self.cluster is None:
            return None
        try:
            state = self.cluster.peer_links.state()
        except RuntimeError:
            return None
        link = state.get(name) or {}
        return {
            "partitioned": bool(link.get("partitioned")),
            "latency_ms": link.get("latency_ms", 0.0),
            "open_connections_from": link.get("sources"),
        }
