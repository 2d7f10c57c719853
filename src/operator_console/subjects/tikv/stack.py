"""A TiKV cluster in a compose stack: its stores and PD members are containers (a store's
service is the host of its advertised address, a PD member's its name), so the operator can
restart or resume them, and a scenario can kill or pause them.

Faults: `store_kill` and `store_pause` (a TiKV service), `pd_leader_kill` (whichever PD
member leads), `leader_imbalance` (PD's evict-leader scheduler holds every leader off one
store: a real scheduling change, undone by `undrain_store` or by clearing the fault).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from operator_console.contract import DEAD, ActionSpec, ProcessBackend, ProcessControlError
from operator_console.subjects.tikv.actions import StoreRef
from operator_console.subjects.tikv.pd import PDClient
from operator_console.subjects.tikv.pd_errors import PDError, SchedulerNotFoundError
from operator_console.subjects.tikv.state import store_target, target_id

FAULT_KINDS: tuple[str, ...] = ("store_kill", "store_pause", "pd_leader_kill", "leader_imbalance")
PD_LEADER_TARGET = "pd-leader"
_STORE_FAULTS = ("store_kill", "store_pause", "leader_imbalance")
_LEADER_WAIT_S = 10.0


class StackError(RuntimeError):
    """A store or PD member has no container here; the message names it and what exists."""


def host_of(address: str) -> str:
    """`tikv-1:20160` -> `tikv-1`; `http://pd-1:2379` -> `pd-1`."""
    rest = address.split("://", 1)[-1]
    return rest.rsplit(":", 1)[0].strip("[]")


class TikvContainers:
    """Which container is which store or PD member, read from PD each time (ids are PD's)."""

    def __init__(self, pd: PDClient, processes: ProcessBackend) -> None:
        self.pd = pd
        self.processes = processes

    def _known(self, service: str, what: str) -> str:
        names = list(self.processes.names())
        if service not in names:
            raise StackError(
                f"{what} runs as {service!r}, which is no service of this stack "
                f"(services: {', '.join(names)})"
            )
        return service

    async def store_service(self, store: str) -> str:
        """The service of `store-N` (or of a service name given as is)."""
        if store in self.processes.names():
            return store
        number = target_id(store, "store")
        stores = await self.pd.stores()
        for s in stores:
            if s.id == number:
                return self._known(host_of(s.address), f"{store} ({s.address})")
        raise StackError(
            f"PD knows no {store} (stores: {', '.join(f'store-{s.id}' for s in stores)})"
        )

    async def store_of_service(self, service: str) -> int:
        """PD's id of the store a TiKV service runs."""
        stores = await self.pd.stores()
        for s in stores:
            if host_of(s.address) == service:
                return s.id
        raise StackError(f"no store of PD's advertises {service!r} as its host")

    async def pd_service(self, member: str) -> str:
        members = await self.pd.members()
        for m in members.members:
            if m.name == member:
                if m.name in self.processes.names():
                    return m.name
                return self._known(host_of(m.client_urls[0]), f"PD member {member}")
        raise StackError(
            f"PD has no member {member!r} (members: {', '.join(m.name for m in members.members)})"
        )

    async def pd_leader_service(self) -> str:
        deadline = time.monotonic() + _LEADER_WAIT_S
        while True:
            try:
                leader = await self.pd.leader()
            except PDError:
                leader = None
            if leader is not None:
                return await self.pd_service(leader.name)
            if time.monotonic() > deadline:
                raise StackError("no PD member leads right now, so none can be aimed at")
            await asyncio.sleep(0.2)


# ---------------------------------------------------------------------- actions


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StoreParams(_Params):
    store: StoreRef


class PDMemberParams(_Params):
    member: str = Field(min_length=1, description="a PD member's name (pd-1)")


def stack_actions(pd: PDClient, processes: ProcessBackend) -> list[ActionSpec]:
    """restart_store, resume_store and restart_pd_member through the container backend."""
    where = TikvContainers(pd, processes)

    async def act(verb: str, service: str, call: Any) -> str:
        await processes.refresh()
        before = processes.status(service)
        try:
            await call(service)
        except ProcessControlError as exc:
            raise StackError(f"{verb} {service} failed: {exc}") from exc
        return before or "unknown"

    async def restart_store(p: StoreParams) -> str:
        ref = p.store
        service = await where.store_service(ref)
        before = await act("restarting", service, processes.restart)
        return (
            f"restarted {ref}'s {processes.kind} {processes.ident(service) or service} (was "
            f"{before}); PD marks it Up at its next heartbeat"
        )

    async def resume_store(p: StoreParams) -> str:
        ref = p.store
        service = await where.store_service(ref)
        await processes.refresh()
        state = processes.status(service)
        if state != "paused":
            raise StackError(f"{ref} ({service}) is {state}, not paused: restart_store it")
        await act("resuming", service, processes.resume)
        return f"resumed {ref}'s {processes.kind} ({service})"

    async def restart_pd_member(p: PDMemberParams) -> str:
        service = await where.pd_service(p.member)
        before = await act("restarting", service, processes.restart)
        return f"restarted PD member {p.member} ({service}, was {before})"

    common: dict[str, Any] = {"retry": False}
    return [
        ActionSpec(
            "restart_store",
            "Restart a store's TiKV container (started again on its own data), for a store "
            "whose process died or hangs.",
            StoreParams,
            "medium",
            ("store_down", "store_disconnected"),
            60.0,
            restart_store,
            target_params=("store",),
            **common,
        ),
        ActionSpec(
            "resume_store",
            "Unpause a paused store's TiKV container.",
            StoreParams,
            "low",
            ("store_down", "store_disconnected"),
            20.0,
            resume_store,
            target_params=("store",),
            **common,
        ),
        ActionSpec(
            "restart_pd_member",
            "Restart one PD member's container; the others keep a quorum meanwhile.",
            PDMemberParams,
            "medium",
            ("pd_member_unhealthy", "no_pd_leader"),
            60.0,
            restart_pd_member,
            target_params=("member",),
            **common,
        ),
    ]


# ----------------------------------------------------------------------- faults


class StackFault:
    """One of FAULT_KINDS; `target` becomes the store or PD member hit once injected."""

    def __init__(self, where: TikvContainers, kind: str, service: str) -> None:
        self.kind = kind
        self.target = service
        self._where = where
        self._service = service
        self._store_id: int | None = None

    def describe(self) -> str:
        word = self._where.processes.kind
        match self.kind:
            case "store_pause":
                return f"pause the {word} of {self.target}: its ports stay open, it answers no one"
            case "pd_leader_kill":
                return f"SIGKILL the {word} of the PD leader ({self.target}); PD elects anew"
            case "leader_imbalance":
                return (
                    f"PD's evict-leader scheduler holds every region leader off {self.target}: "
                    "the other stores carry them all"
                )
        return f"SIGKILL the {word} of {self.target}; it stays down until cleared"

    async def inject(self) -> None:
        processes = self._where.processes
        if self.kind == "pd_leader_kill":
            self._service = await self._where.pd_leader_service()
            self.target = self._service
            await processes.kill(self._service)
            return
        self._store_id = await self._where.store_of_service(self._service)
        self.target = store_target(self._store_id)
        if self.kind == "leader_imbalance":
            await self._where.pd.add_evict_leader_scheduler(self._store_id)
        elif self.kind == "store_pause":
            await processes.pause(self._service)
        else:
            await processes.kill(self._service)

    async def clear(self) -> None:
        processes = self._where.processes
        if self.kind == "leader_imbalance":
            if self._store_id is not None:
                try:
                    await self._where.pd.remove_evict_leader_scheduler(self._store_id)
                except SchedulerNotFoundError:
                    pass  # an operator undrained it already
            return
        await processes.refresh()
        state = processes.status(self._service)
        if self.kind == "store_pause":
            if state == "paused":
                await processes.resume(self._service)
        elif state in (*DEAD, None):
            await processes.start(self._service)


def stack_targets(pd_members: int, stores: int) -> list[str]:
    """Names a fault may target: the TiKV and PD services of the stack, and the PD leader."""
    return [
        *(f"tikv-{i}" for i in range(1, stores + 1)),
        *(f"pd-{i}" for i in range(1, pd_members + 1)),
        PD_LEADER_TARGET,
    ]


def make_stack_fault(
    pd: PDClient,
    processes: ProcessBackend,
    kind: str,
    target: str | None,
    params: Mapping[str, Any],
) -> StackFault:
    """A fault on the stack; ValueError names what is possible."""
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {kind!r} (valid: {', '.join(FAULT_KINDS)})")
    if params:
        raise ValueError(f"fault {kind!r} takes no parameters (given: {', '.join(params)})")
    services: Sequence[str] = processes.names()
    if kind == "pd_leader_kill":
        return StackFault(TikvContainers(pd, processes), kind, PD_LEADER_TARGET)
    stores = [s for s in services if s.startswith("tikv")]
    chosen = target or (stores[0] if stores else "")
    if kind in _STORE_FAULTS and chosen not in stores:
        raise ValueError(
            f"fault {kind!r} cannot target {chosen!r} (TiKV services: {', '.join(stores)})"
        )
    return StackFault(TikvContainers(pd, processes), kind, chosen)
