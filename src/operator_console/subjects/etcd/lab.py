"""The etcd subject's labs: the local cluster (which binary runs, faults that may name the
leader) and the `Lab` of a cluster the console attached to (endpoints without secrets)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

from operator_console.contract import AttachedLab, Fault
from operator_console.lab.etcd.cluster import EtcdCluster
from operator_console.lab.etcd.faults import LEADER_TARGET, FaultError
from operator_console.subjects.etcd.backend import EtcdBackend
from operator_console.subjects.etcd.stack_faults import STACK_FAULT_KINDS, make_stack_fault

MiB = 1024 * 1024
# Faults on one member that a scenario may aim at whichever member leads when it fires.
LEADER_AIMED = ("member_kill", "member_pause", "peer_partition", "peer_latency")


LEADER_WAIT_S = 5.0


async def wait_for_leader(cluster: EtcdCluster, kind: str) -> str:
    """The member that leads now, asked again for a few seconds: on a busy machine one round
    of status reads may time out, or an election may be under way."""
    deadline = time.monotonic() + LEADER_WAIT_S
    while True:
        leader = await cluster.leader()
        if leader is not None:
            return leader
        if time.monotonic() > deadline:
            raise FaultError(f"{kind}: no member leads right now, so none can be aimed at")
        await asyncio.sleep(0.1)


class LeaderFirst:
    """The lab's leader_kill, fired once a leader is known (it reads the leader itself)."""

    def __init__(self, cluster: EtcdCluster, fault: Fault) -> None:
        self._cluster = cluster
        self._fault = fault
        self.kind = fault.kind
        self.target = fault.target

    def describe(self) -> str:
        return self._fault.describe()

    async def inject(self) -> None:
        await wait_for_leader(self._cluster, self.kind)
        await self._fault.inject()
        self.target = self._fault.target  # the member that led and was killed

    async def clear(self) -> None:
        await self._fault.clear()


class OnLeader:
    """A member fault aimed at the member that leads at injection time."""

    def __init__(self, cluster: EtcdCluster, kind: str, params: Mapping[str, Any]) -> None:
        self.kind = kind
        self.target = LEADER_TARGET
        self._cluster = cluster
        self._params = dict(params)
        self._fault: Any = None

    def describe(self) -> str:
        if self._fault is None:
            return f"{self.kind} on whichever member leads when it fires"
        return f"{self._fault.describe()} (it led when the fault fired)"

    async def inject(self) -> None:
        leader = await wait_for_leader(self._cluster, self.kind)
        self._fault = self._cluster.make_fault(self.kind, leader, self._params)
        self.target = leader
        await self._fault.inject()

    async def clear(self) -> None:
        if self._fault is not None:
            await self._fault.clear()


class EtcdLab:
    """The local cluster as the console's `Lab`: every member a process of its own."""

    def __init__(self, cluster: EtcdCluster, backend: EtcdBackend) -> None:
        self.cluster = cluster
        self._backend = backend

    async def start(self) -> None:
        await self.cluster.start()

    async def stop(self) -> None:
        await self._backend.aclose()
        await self.cluster.stop()

    def endpoints(self) -> dict[str, Any]:
        return self.cluster.endpoints()

    def about(self) -> str:
        """Which etcd runs (binary, release, where it was found, upstream's caveat) and how."""
        binary = self.cluster.binary
        quota = self.cluster.quota_backend_bytes
        quota_text = f"{quota / MiB:g} MiB" if quota else "etcd's default 2 GiB"
        text = (
            f"etcd {binary.version} ({binary.path}, from {binary.source}): "
            f"{self.cluster.members} members, backend quota {quota_text}, "
            f"heartbeat {self.cluster.heartbeat_ms} ms, election timeout "
            f"{self.cluster.election_ms} ms, client traffic "
            f"{'https' if self.cluster.tls else 'http'}; every peer link runs through a fault "
            "proxy that can cut or slow it"
        )
        if binary.note:
            text += f". Note: {binary.note}"
        return text

    def fault_kinds(self) -> Sequence[str]:
        return self.cluster.fault_kinds()

    def make_fault(self, kind: str, target: str | None, params: Mapping[str, Any]) -> Fault:
        if target == LEADER_TARGET and kind in LEADER_AIMED:
            self.cluster.make_fault(kind, None, params)  # checks the kind's parameters now
            return OnLeader(self.cluster, kind, params)
        fault = self.cluster.make_fault(kind, target, params)
        return LeaderFirst(self.cluster, fault) if kind == "leader_kill" else fault


class AttachedEtcdLab(AttachedLab):
    """A cluster the console did not start: its endpoints without the password, nothing to
    start; stopping closes the console's own clients. With a process backend (a compose
    stack's containers) it offers the faults the backend can do."""

    def __init__(self, shown: Mapping[str, Any], about: str, backend: EtcdBackend) -> None:
        super().__init__(shown, about)
        self._backend = backend

    async def stop(self) -> None:
        await self._backend.aclose()

    def fault_kinds(self) -> Sequence[str]:
        return STACK_FAULT_KINDS if self._backend.processes else ()

    def make_fault(self, kind: str, target: str | None, params: Mapping[str, Any]) -> Fault:
        return make_stack_fault(self._backend, kind, target, params)
