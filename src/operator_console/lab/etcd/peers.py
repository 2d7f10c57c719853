"""Every etcd member's peer traffic runs through fault proxies: real partitions, slow links.

Each member advertises its own inbound proxy as its peer URL, so every connection another member
opens to it passes that proxy. A proxy alone only sees "someone connected"; to cut or slow both
directions of one member's links it must know which member dialled. Two sources, cheapest first:
etcd's rafthttp names itself in an `X-Server-From: <member id>` header on its stream and
pipeline requests; and the kernel knows which process owns the dialling socket (its local port,
found in /proc/net/tcp and the members' /proc/PID/fd). The socket table covers the requests
without the header (the prober's `/raft/probing`, `/version`, lease renewals, TLS), and teaches
the proxies which member ID is which member, so a redial storm during a partition is attributed
from the header alone. See docs/etcd-lab.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from operator_console.lab.proxy import FaultProxy

PidOf = Callable[[str], int | None]


@dataclass(frozen=True, slots=True)
class PeerPorts:
    """Where a member's peer traffic is advertised (the proxy) and where etcd really listens."""

    advertised: int
    listen: int


_PROC_TABLES = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))
# A lookup reuses the last table this long; a miss always rebuilds it.
_TABLE_FRESH_S = 1.0

HEAD_BYTES = 4096
_SERVER_FROM = re.compile(rb"\r\nX-Server-From:[ \t]*([0-9a-fA-F]+)\r\n", re.IGNORECASE)

Connection = tuple[int, int]  # (dialler's local port, port it dialled)


def server_from(head: bytes) -> str | None:
    """The member ID (hex) an etcd peer request names itself with, if the head carries one."""
    match = _SERVER_FROM.search(head)
    return match.group(1).decode().lower() if match else None


def _psutil_connections(pid: int) -> list[Any]:
    proc = psutil.Process(pid)
    # psutil 6 renamed connections() to net_connections(); support both.
    lister = getattr(proc, "net_connections", None) or proc.connections
    return list(lister(kind="tcp"))


class SocketOwners:
    """Which member process holds a TCP connection, read from the kernel's socket tables.

    On Linux one pass over /proc/net/tcp{,6} and the members' /proc/PID/fd maps every member
    socket to the proxy ports at once; a burst of new connections (a start, a healed
    partition) then costs one pass, not one per connection. Elsewhere psutil asks per member.
    """

    def __init__(self, names: list[str], pid_of: PidOf, dest_ports: set[int]) -> None:
        self._names = names
        self._pid_of = pid_of
        self._dest_ports = dest_ports
        self._lock = threading.Lock()
        self._table: dict[Connection, str] = {}
        self._built_at = -math.inf
        self._proc = all(path.exists() for path in _PROC_TABLES[:1])

    def owner(self, source_port: int, dest_port: int) -> str | None:
        key = (source_port, dest_port)
        with self._lock:
            if time.monotonic() - self._built_at < _TABLE_FRESH_S and key in self._table:
                return self._table[key]
            self._table = self._build()
            self._built_at = time.monotonic()
            return self._table.get(key)

    def _build(self) -> dict[Connection, str]:
        return self._build_from_proc() if self._proc else self._build_from_psutil()

    def _build_from_proc(self) -> dict[Connection, str]:
        by_inode: dict[str, Connection] = {}
        for path in _PROC_TABLES:
            try:
                lines = path.read_text().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                fields = line.split()
                if len(fields) < 10:
                    continue
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                if remote_port in self._dest_ports:
                    local_port = int(fields[1].rsplit(":", 1)[1], 16)
                    by_inode[fields[9]] = (local_port, remote_port)
        table: dict[Connection, str] = {}
        for name in self._names:
            pid = self._pid_of(name)
            if pid is None:
                continue
            fd_dir = f"/proc/{pid}/fd"
            try:
                fds = os.listdir(fd_dir)
            except OSError:
                continue
            for fd in fds:
                try:
                    link = os.readlink(f"{fd_dir}/{fd}")
                except OSError:
                    continue
                if link.startswith("socket:["):
                    connection = by_inode.get(link[8:-1])
                    if connection is not None:
                        table[connection] = name
        return table

    def _build_from_psutil(self) -> dict[Connection, str]:
        table: dict[Connection, str] = {}
        for name in self._names:
            pid = self._pid_of(name)
            if pid is None:
                continue
            try:
                connections = _psutil_connections(pid)
            except psutil.Error:
                continue
            for conn in connections:
                if conn.laddr and conn.raddr and conn.raddr.port in self._dest_ports:
                    table[(conn.laddr.port, conn.raddr.port)] = name
        return table


class PeerLinks:
    """One attributed inbound proxy per member; a member's faults apply to all of its links."""

    def __init__(self, host: str, ports: Mapping[str, PeerPorts], pid_of: PidOf) -> None:
        self.host = host
        self._ports = dict(ports)
        self._owners = SocketOwners(
            list(self._ports), pid_of, {p.advertised for p in self._ports.values()}
        )
        self._by_id: dict[str, str] = {}  # member ID (hex) -> member name, learnt
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
                head_bytes=HEAD_BYTES,
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

    @property
    def known_ids(self) -> dict[str, str]:
        """Member IDs (hex) learnt from X-Server-From headers, with the member each one is."""
        return dict(self._by_id)

    def _identifier(self, listen_port: int) -> Callable[[tuple[Any, ...], bytes], Any]:
        async def identify(peer: tuple[Any, ...], head: bytes) -> str | None:
            member_id = server_from(head)
            if member_id is not None and member_id in self._by_id:
                return self._by_id[member_id]
            loop = asyncio.get_running_loop()
            name = await loop.run_in_executor(None, self.owner_of, int(peer[1]), listen_port)
            if name is not None and member_id is not None:
                self._by_id[member_id] = name
            return name

        return identify

    def owner_of(self, source_port: int, dest_port: int) -> str | None:
        """The member whose process holds the socket from `source_port` to `dest_port`."""
        return self._owners.owner(source_port, dest_port)
