"""Every etcd member's peer traffic runs through fault proxies: real partitions, slow links.

Each member advertises its own inbound proxy as its peer URL, so every connection another member
opens to it passes that proxy. A proxy alone only sees "someone connected"; to cut or slow both
directions of one member's links, each proxy asks the kernel which member process owns the
connecting socket (the dialler's local port, looked up in the members' socket tables). That
attributes every peer connection, including those without etcd's `X-Server-From` header
(the prober's `/raft/probing`, `/version`, lease renewals), and works for TLS peer traffic too.
See docs/etcd-lab.md.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import psutil

from operator_console.lab.proxy import FaultProxy

PidOf = Callable[[str], int | None]


@dataclass(frozen=True, slots=True)
class PeerPorts:
    """Where a member's peer traffic is advertised (the proxy) and where etcd really listens."""

    advertised: int
    listen: int


def _connections(pid: int) -> list[Any]:
    proc = psutil.Process(pid)
    # psutil 6 renamed connections() to net_connections(); support both.
    lister = getattr(proc, "net_connections", None) or proc.connections
    return list(lister(kind="tcp"))


class PeerLinks:
    """One attributed inbound proxy per member; a member's faults apply to all of its links."""

    def __init__(self, host: str, ports: Mapping[str, PeerPorts], pid_of: PidOf) -> None:
        self.host = host
        self._ports = dict(ports)
        self._pid_of = pid_of
        self._proxies: dict[str, FaultProxy] = {}
        self._partitioned: set[str] = set()
        self._latency: dict[str, float] = {}

    @property
    def members(self) -> list[str]:
        return list(self._ports)

    def proxy(self, name: str) -> FaultProxy:
        try:
            return self._proxies[name]
        except KeyError:
            raise RuntimeError(f"{name} has no peer proxy running") from None

    @property
    def partitioned(self) -> frozenset[str]:
        return frozenset(self._partitioned)

    @property
    def latency(self) -> dict[str, float]:
        return dict(self._latency)

    # --------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        for name, ports in self._ports.items():
            if name in self._proxies:
                continue
            proxy = FaultProxy(
                self.host,
                ports.advertised,
                self.host,
                ports.listen,
                identify=self._identifier(ports.advertised),
            )
            await proxy.start()
            self._proxies[name] = proxy
        self._apply()

    async def stop(self) -> None:
        proxies, self._proxies = self._proxies, {}
        for proxy in proxies.values():
            with contextlib.suppress(Exception):
                await proxy.stop()

    # ------------------------------------------------------------------ faults

    def partition(self, name: str) -> None:
        """Cut `name` off from every other member, both ways; open connections drop."""
        self._check(name)
        self._partitioned.add(name)
        self._apply()

    def heal(self, name: str) -> None:
        self._check(name)
        self._partitioned.discard(name)
        self._apply()

    def set_latency(self, name: str, ms: float) -> None:
        """Delay every byte on `name`'s peer links by `ms`, each way (0 removes it)."""
        self._check(name)
        if ms < 0:
            raise ValueError(f"latency must be >= 0 ms, got {ms}")
        if ms == 0:
            self._latency.pop(name, None)
        else:
            self._latency[name] = float(ms)
        self._apply()

    def restore(self) -> None:
        """Every link clean again."""
        self._partitioned.clear()
        self._latency.clear()
        self._apply()

    def _check(self, name: str) -> None:
        if name not in self._ports:
            raise ValueError(f"unknown member {name!r} (members: {', '.join(self._ports)})")

    def _apply(self) -> None:
        """Make every proxy's rules match the partitions and latencies asked for."""
        for name, proxy in self._proxies.items():
            if name in self._partitioned:
                proxy.cut()  # everyone -> name
            else:
                proxy.uncut()
            proxy.set_latency(self._latency.get(name, 0.0))
            for other in self._ports:
                if other == name:
                    continue
                if other in self._partitioned:
                    proxy.cut_source(other)  # other -> name
                else:
                    proxy.uncut_source(other)
                proxy.set_source_latency(other, self._latency.get(other, 0.0))

    def state(self) -> dict[str, Any]:
        """Per member: its proxy's counters, which members its open connections come from."""
        return {
            name: {
                "partitioned": name in self._partitioned,
                "latency_ms": self._latency.get(name, 0.0),
                **proxy.state,
            }
            for name, proxy in self._proxies.items()
        }

    # ------------------------------------------------------------- attribution

    def _identifier(self, listen_port: int) -> Callable[[tuple[Any, ...]], Any]:
        async def identify(peer: tuple[Any, ...]) -> str | None:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(None, self.owner_of, int(peer[1]), listen_port)

        return identify

    def owner_of(self, source_port: int, dest_port: int) -> str | None:
        """The member whose process holds the socket from `source_port` to `dest_port`."""
        for name in self._ports:
            pid = self._pid_of(name)
            if pid is None:
                continue
            try:
                connections = _connections(pid)
            except psutil.Error:
                continue
            for conn in connections:
                if (
                    conn.laddr
                    and conn.raddr
                    and conn.laddr.port == source_port
                    and conn.raddr.port == dest_port
                ):
                    return name
        return None
