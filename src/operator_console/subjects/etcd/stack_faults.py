"""Faults on members the console reaches through a process backend (a compose stack's
containers): a member or the leader killed, a member paused, a quorum killed. Each goes
through the backend (SIGKILL, the cgroup freezer), never by writing a symptom; clearing starts
or resumes what the fault stopped."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from operator_console.contract import DEAD, ProcessBackend
from operator_console.lab.etcd.client import EtcdError
from operator_console.lab.etcd.faults import LEADER_TARGET, FaultError
from operator_console.subjects.etcd.backend import EtcdBackend

STACK_FAULT_KINDS: tuple[str, ...] = ("member_kill", "leader_kill", "member_pause", "quorum_kill")
_LEADER_WAIT_S = 5.0
_STATUS_TIMEOUT_S = 0.5


async def current_leader(backend: EtcdBackend) -> str | None:
    """The member that says it leads at the highest raft term, if any answers so."""

    async def one(name: str) -> tuple[str, Any]:
        try:
            return name, await backend.client(name).status(timeout=_STATUS_TIMEOUT_S)
        except EtcdError:
            return name, None

    best: tuple[int, str] | None = None
    for name, status in await asyncio.gather(*(one(n) for n in backend.member_names)):
        if status is not None and status.is_leader:
            if best is None or status.raft_term > best[0]:
                best = (status.raft_term, name)
    return best[1] if best is not None else None


async def wait_for_leader(backend: EtcdBackend, kind: str) -> str:
    deadline = time.monotonic() + _LEADER_WAIT_S
    while True:
        leader = await current_leader(backend)
        if leader is not None:
            return leader
        if time.monotonic() > deadline:
            raise FaultError(f"{kind}: no member leads right now, so none can be aimed at")
        await asyncio.sleep(0.1)


class StackFault:
    """One fault through the process backend; `target` becomes the member hit once injected."""

    def __init__(self, backend: EtcdBackend, processes: ProcessBackend, kind: str, target: str):
        self.kind = kind
        self.target = target
        self._backend = backend
        self._processes = processes
        self._victims: list[str] = []

    def _word(self) -> str:
        return "container" if self._processes.kind == "container" else "process"

    def describe(self) -> str:
        word = self._word()
        victims = ", ".join(self._victims) or self.target
        match self.kind:
            case "leader_kill":
                return (
                    f"SIGKILL the {word} of whichever member leads ({victims}); the rest elect anew"
                )
            case "member_pause":
                return f"pause {victims}'s {word}: its port stays open but it answers no one"
            case "quorum_kill":
                return f"SIGKILL the {word}s of {victims}: no quorum is left, writes stop"
        return f"SIGKILL {victims}'s {word}; it stays down (data intact) until cleared"

    def _quorum(self, first: str) -> list[str]:
        names = self._backend.member_names
        start = names.index(first)
        return [names[(start + i) % len(names)] for i in range(len(names) // 2 + 1)]

    async def inject(self) -> None:
        target = self.target
        if self.kind == "leader_kill" or target == LEADER_TARGET:
            target = await wait_for_leader(self._backend, self.kind)
        self._victims = self._quorum(target) if self.kind == "quorum_kill" else [target]
        self.target = target
        if self.kind == "member_pause":
            await self._processes.pause(target)
            return
        await asyncio.gather(*(self._processes.kill(name) for name in self._victims))

    async def clear(self) -> None:
        await self._processes.refresh()
        if self.kind == "member_pause":
            if self._processes.status(self.target) == "paused":
                await self._processes.resume(self.target)
            return
        down = [n for n in self._victims if self._processes.status(n) in (*DEAD, None)]
        # All at once: one member alone may lack a quorum to rejoin.
        await asyncio.gather(*(self._processes.start(name) for name in down))


def make_stack_fault(
    backend: EtcdBackend, kind: str, target: str | None, params: Mapping[str, Any]
) -> StackFault:
    """A fault the process backend can do; ValueError names what is possible."""
    processes = backend.process_backend
    if processes is None:
        raise ValueError("fault injection is off for a cluster the console did not start")
    if kind not in STACK_FAULT_KINDS:
        raise ValueError(
            f"fault {kind!r} cannot be done on this cluster's {processes.kind}s (possible: "
            f"{', '.join(STACK_FAULT_KINDS)}; partitions and latency need the local lab's "
            "peer proxies)"
        )
    if params:
        raise ValueError(f"fault {kind!r} takes no parameters here (given: {', '.join(params)})")
    members = backend.member_names
    if kind == "leader_kill":
        chosen = LEADER_TARGET
    else:
        chosen = target or (members[1] if len(members) > 1 else members[0])
    valid = [*members, LEADER_TARGET]
    if chosen not in valid:
        raise ValueError(f"fault {kind!r} cannot target {chosen!r} (valid: {', '.join(valid)})")
    if kind == "quorum_kill" and len(members) < 3:
        raise ValueError("fault 'quorum_kill' needs at least 3 members")
    return StackFault(backend, processes, kind, chosen)
