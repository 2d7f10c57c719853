"""What the operator may do to etcd: each action acts on the real cluster, through etcd's own API
or (for a cluster the console started) its processes, and says what it did step by step."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model

from operator_console.contract import (
    ActionCatalog,
    ActionSpec,
    Effect,
    ProcessBackend,
    ProcessControlError,
    Risk,
)
from operator_console.lab.etcd.client import EtcdError, EtcdRequestError, Status
from operator_console.subjects.etcd.backend import NO_PROCESS, EtcdBackend

PROBE_KEY = "console/probe/write"
_STATUS_TIMEOUT_S = 1.0
_DEFRAG_TIMEOUT_S = 30.0
_SIZE_TIMEOUT_S = 5.0
_SETTLE_S = 5.0
_SETTLE_STEP_S = 0.25
_STABLE_S = 1.0
_LEADER_WAIT_S = 5.0
_REJOIN_S = 20.0
MiB = 1024 * 1024


class ActionFailed(RuntimeError):
    """etcd refused or could not do an action; the message names the member and why."""


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NoParams(_Params):
    pass


class AlarmParams(_Params):
    alarm: Literal["NOSPACE", "CORRUPT"] = "NOSPACE"


def _member_type(members: Sequence[str]) -> Any:
    """A member-name type that accepts only this cluster's members (listed in its schema)."""
    known = tuple(members)

    def check(value: str) -> str:
        if value not in known:
            raise ValueError(f"unknown member {value!r} (members: {', '.join(known)})")
        return value

    return Annotated[
        str,
        Field(description="member name", json_schema_extra={"enum": list(known)}),
        AfterValidator(check),
    ]


def _mib(value: int) -> str:
    return f"{value / MiB:.1f} MiB"


class EtcdActions:
    """The action bodies. Process actions need the lab; the rest use etcd's client API."""

    def __init__(self, backend: EtcdBackend) -> None:
        self.backend = backend

    # -- helpers ---------------------------------------------------------------------------

    async def _statuses(self) -> dict[str, Status | None]:
        async def one(name: str) -> Status | None:
            try:
                return await self.backend.client(name).status(timeout=_STATUS_TIMEOUT_S)
            except EtcdError:
                return None

        names = self.backend.member_names
        found = await asyncio.gather(*(one(n) for n in names))
        return dict(zip(names, found, strict=True))

    async def _with_leader(self) -> tuple[str, dict[str, Status | None]]:
        """A member that knows a leader (cluster-wide requests go through raft)."""
        statuses = await self._statuses()
        for name, status in statuses.items():
            if status is not None and status.leader:
                return name, statuses
        raise ActionFailed("no member knows a leader: cluster-wide requests cannot commit")

    def _processes(self) -> ProcessBackend:
        if self.backend.process_backend is None:
            raise ActionFailed(f"this action {NO_PROCESS}")
        return self.backend.process_backend

    async def _rejoined(self, member: str, deadline: float) -> Status:
        """The member's own status once it answers and follows a leader again."""
        last = "no answer"
        while True:
            try:
                status = await self.backend.client(member).status(timeout=_STATUS_TIMEOUT_S)
            except EtcdError as exc:
                last = str(exc)
            else:
                if status.leader:
                    return status
                last = "it answers but knows no leader yet"
            if time.monotonic() > deadline:
                raise ActionFailed(f"{member} was started again but has not rejoined: {last}")
            await asyncio.sleep(0.1)

    # -- processes (the local lab's, or a stack's containers) ------------------------------

    async def restart_member(self, p: Any) -> str:
        processes = self._processes()
        kind = processes.kind
        async with self.backend.lock(p.member):
            await self.backend.refresh_processes()
            before = processes.status(p.member)
            if before == "paused":
                raise ActionFailed(f"{p.member} is paused: resume_member, not a restart")
            if before == "running":
                try:
                    await self.backend.client(p.member).status(timeout=_STATUS_TIMEOUT_S)
                except EtcdError:
                    pass  # running but silent: hung, restart it
                else:
                    return f"{p.member} is running and answers: nothing to restart"
            started = time.monotonic()
            try:
                await processes.restart(p.member)
            except ProcessControlError as exc:
                raise ActionFailed(f"restarting {p.member}'s {kind} failed: {exc}") from exc
            status = await self._rejoined(p.member, started + _REJOIN_S)
            took = time.monotonic() - started
        where = self.backend.where(p.member) or kind
        return (
            f"restarted {p.member} (was {before}) on its data dir and ports; "
            f"{where} answered after {took:.2f} s, following the leader in term "
            f"{status.raft_term}"
        )

    async def resume_member(self, p: Any) -> str:
        processes = self._processes()
        async with self.backend.lock(p.member):
            await self.backend.refresh_processes()
            status = processes.status(p.member)
            if status == "running":
                return f"{p.member} was already running; nothing to resume"
            if status != "paused":
                raise ActionFailed(f"{p.member} is {status}, not paused: restart_member it")
            try:
                await processes.resume(p.member)
            except ProcessControlError as exc:
                raise ActionFailed(f"resuming {p.member} failed: {exc}") from exc
            await self.backend.refresh_processes()
            how = "unpaused its container" if processes.kind == "container" else "sent SIGCONT to"
            return f"{how} {p.member}; it is {processes.status(p.member)}"

    # -- etcd's own API --------------------------------------------------------------------

    async def move_leader(self, p: Any) -> str:
        statuses = await self._statuses()
        target = statuses.get(p.to)
        if target is None:
            raise ActionFailed(f"{p.to} does not answer: leadership cannot go to it")
        if target.is_leader:
            return f"{p.to} already leads (term {target.raft_term}); nothing to move"
        leader = next((n for n, s in statuses.items() if s is not None and s.is_leader), None)
        if leader is None:
            raise ActionFailed("no member leads right now, so there is no leadership to move")
        if not target.leader or target.leader != statuses[leader].member_id:  # type: ignore[union-attr]
            raise ActionFailed(f"{p.to} does not follow {leader}: it is not a healthy target")
        try:
            await self.backend.client(leader).move_leader(target.member_id, timeout=_LEADER_WAIT_S)
        except EtcdError as exc:
            raise ActionFailed(f"{leader} refused to hand leadership to {p.to}: {exc}") from exc
        deadline = time.monotonic() + _LEADER_WAIT_S
        while time.monotonic() < deadline:
            try:
                now = await self.backend.client(p.to).status(timeout=_STATUS_TIMEOUT_S)
            except EtcdError:
                now = None
            if now is not None and now.is_leader:
                return f"moved leadership from {leader} to {p.to} (term {now.raft_term})"
            await asyncio.sleep(0.1)
        raise ActionFailed(f"{leader} accepted the transfer but {p.to} does not lead yet")

    async def _compact(self) -> str:
        via, statuses = await self._with_leader()
        status = statuses[via]
        assert status is not None
        revision = status.revision
        try:
            await self.backend.client(via).compact(revision, physical=True, timeout=10.0)
        except EtcdRequestError as exc:
            if "compacted" not in exc.server_message:
                raise ActionFailed(f"compaction through {via} failed: {exc}") from exc
            return f"history up to revision {revision} was already compacted ({via})"
        return f"compacted the history to revision {revision} through {via}"

    async def compact(self, p: Any) -> str:
        return await self._compact()

    async def _defragment(self, member: str) -> str:
        client = self.backend.client(member)
        try:
            before = (await client.status(timeout=_SIZE_TIMEOUT_S)).db_size
        except EtcdError as exc:
            raise ActionFailed(f"{member} does not answer, so it cannot be defragmented") from exc
        started = time.monotonic()
        async with self.backend.lock(member):
            try:
                await client.defragment(timeout=_DEFRAG_TIMEOUT_S)
            except EtcdError as exc:
                raise ActionFailed(f"defragmenting {member} failed: {exc}") from exc
        after = (await client.status(timeout=_SIZE_TIMEOUT_S)).db_size
        return (
            f"defragmented {member} in {time.monotonic() - started:.2f} s: database "
            f"{_mib(before)} -> {_mib(after)}"
        )

    async def _settled(self, member: str) -> str:
        """Wait (at most a few seconds) until a compaction has freed this member's pages: each
        member applies it and frees the space in the background, a busy one later than the
        member that took the request. Defragmenting before that gives nothing back."""
        client = self.backend.client(member)
        deadline = time.monotonic() + _SETTLE_S
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            try:
                now = await client.status(timeout=_SIZE_TIMEOUT_S)
            except EtcdError:
                return f"{member} did not answer"
            used = f"{member} uses {_mib(now.db_size_in_use)} of {_mib(now.db_size)}"
            if now.db_size_in_use <= now.db_size // 2:
                return used
            if now.db_size_in_use != last:
                last, since = now.db_size_in_use, time.monotonic()
            elif time.monotonic() - since >= _STABLE_S:
                return used  # nothing more to free: the space is in use
            await asyncio.sleep(_SETTLE_STEP_S)
        return f"{member} still freeing pages after {_SETTLE_S:g} s"

    async def defragment(self, p: Any) -> str:
        # After a compaction each member frees its pages in the background; defragmenting
        # before that gives nothing back.
        settled = await self._settled(p.member)
        return f"{await self._defragment(p.member)} ({settled} before)"

    async def _disarm(self, alarm: str) -> str:
        via, _ = await self._with_leader()
        client = self.backend.client(via)
        raised = [a for a in await client.alarms(timeout=5.0) if a.alarm == alarm]
        if not raised:
            return f"no {alarm} alarm was raised"
        for one in raised:
            await client.disarm(one, timeout=5.0)
        left = [a for a in await client.alarms(timeout=5.0) if a.alarm == alarm]
        if left:
            raise ActionFailed(f"{alarm} is still raised on {len(left)} member(s) after disarming")
        return f"disarmed {alarm} on {len(raised)} member(s) through {via}"

    async def disarm_alarm(self, p: Any) -> str:
        return await self._disarm(p.alarm)

    async def probe_write(self, p: Any) -> str:
        """Prove the cluster takes a write: put a probe key through a member that knows a
        leader."""
        via, _ = await self._with_leader()
        try:
            put = await self.backend.client(via).put(PROBE_KEY, str(time.time()), timeout=5.0)
        except EtcdError as exc:
            raise ActionFailed(f"a test write through {via} fails: {exc}") from exc
        return f"a test write through {via} succeeded at revision {put.revision}"

    def recover_nospace_steps(self, p: Any) -> list[tuple[str, dict[str, Any]]]:
        """The NOSPACE runbook as a chain: compact, defragment each member in turn, disarm
        NOSPACE, prove a write succeeds."""
        return [
            ("compact", {}),
            *(("defragment", {"member": m}) for m in self.backend.member_names),
            ("disarm_alarm", {"alarm": "NOSPACE"}),
            ("probe_write", {}),
        ]


async def _chain_only(_params: Any) -> str:
    raise RuntimeError("a chain runs step by step; the executor runs its steps")


@dataclass(frozen=True, slots=True)
class _Def:
    name: str
    description: str
    params: str  # member, to, alarm, none
    risk: Risk
    restores: tuple[str, ...]
    timeout_s: float = 10.0
    process: bool = False  # needs the lab's processes
    effect: Effect = "fix"
    cause: str | None = None
    retry: bool = True
    chain: bool = False  # its steps are other actions of this catalog


ACTIONS: tuple[_Def, ...] = (
    _Def(
        "restart_member",
        "Start a member whose process died (or hangs) again, on its own data dir and ports; "
        "a member that runs and answers is left alone.",
        "member",
        "medium",
        ("member_down", "quorum_lost"),
        timeout_s=30.0,
        process=True,
    ),
    _Def(
        "resume_member",
        "Resume a paused member (SIGCONT to its process, or unpause its container) so it "
        "answers again.",
        "member",
        "low",
        ("member_down", "quorum_lost"),
        process=True,
    ),
    _Def(
        "move_leader",
        "Hand leadership to a named member that follows the current leader (etcd's "
        "move-leader). A mitigation: writes stop waiting on a slow leader; whatever makes "
        "that member slow stays.",
        "to",
        "medium",
        ("slow_member", "latency_slo"),
        effect="mitigate",
        cause="member_slow",
    ),
    _Def(
        "compact",
        "Compact the key-value history to the current revision (physical): old revisions "
        "are gone for good; the database file keeps its size until defragmented.",
        "none",
        "medium",
        (),
        timeout_s=20.0,
    ),
    _Def(
        "defragment",
        "Defragment one member's database, giving compacted space back to the disk; the "
        "member blocks reads and writes while it runs.",
        "member",
        "medium",
        ("db_near_quota",),
        timeout_s=40.0,
    ),
    _Def(
        "disarm_alarm",
        "Deactivate a raised alarm (NOSPACE by default); without space reclaimed first, "
        "the next write raises NOSPACE again.",
        "alarm",
        "low",
        ("nospace_alarm",),
    ),
    _Def(
        "probe_write",
        "Write a probe key through a member that knows a leader: proves the cluster takes "
        "writes again.",
        "none",
        "low",
        (),
        effect="diagnose",
    ),
    _Def(
        "recover_nospace",
        "The NOSPACE runbook as a chain under one approval: compact to the current revision, "
        "defragment each member in turn, disarm NOSPACE, prove a write succeeds; a failing "
        "step stops it.",
        "none",
        "medium",
        ("nospace_alarm", "db_near_quota"),
        timeout_s=150.0,
        chain=True,
    ),
)
ACTION_NAMES: tuple[str, ...] = tuple(d.name for d in ACTIONS)
_TARGET_PARAMS = {"member": ("member",), "to": ("to",)}


def build_catalog(backend: EtcdBackend) -> ActionCatalog:
    """Every action the agent may propose for this cluster; what this placement cannot do is
    listed as unavailable, with the reason."""
    acts = EtcdActions(backend)
    member = _member_type(backend.member_names)
    models: dict[str, type[BaseModel]] = {
        "member": create_model("MemberParams", __base__=_Params, member=(member, ...)),
        "to": create_model("MoveLeaderParams", __base__=_Params, to=(member, ...)),
        "alarm": AlarmParams,
        "none": NoParams,
    }
    specs: list[ActionSpec] = []
    unavailable: dict[str, str] = {}
    for d in ACTIONS:
        if d.process and not backend.processes:
            unavailable[d.name] = NO_PROCESS
            continue
        run: Callable[[Any], Awaitable[str]] = _chain_only if d.chain else getattr(acts, d.name)
        specs.append(
            ActionSpec(
                d.name,
                d.description,
                models[d.params],
                d.risk,
                d.restores,
                d.timeout_s,
                run,
                retry=d.retry,
                target_params=_TARGET_PARAMS.get(d.params, ()),
                fixed_targets=("cluster",) if d.params == "none" else (),
                effect=d.effect,
                cause=d.cause,
                verify=d.effect != "diagnose",
                steps=getattr(acts, f"{d.name}_steps") if d.chain else None,
            )
        )
    return ActionCatalog(tuple(specs), unavailable)
