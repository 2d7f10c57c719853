"""Real faults for the etcd cluster: signals, peer link proxies and a real burst of writes."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from operator_console.lab.etcd.client import EtcdError, EtcdRequestError

if TYPE_CHECKING:
    from operator_console.lab.etcd.cluster import EtcdCluster

log = logging.getLogger(__name__)

LEADER_TARGET = "leader"
CLUSTER_TARGET = "cluster"
DEFAULT_LATENCY_MS = 200
FILL_PREFIX = "lab/quota-fill/"
DEFAULT_FILL_VALUE_BYTES = 256 * 1024
DEFAULT_FILL_KEYS = 4
DEFAULT_FILL_TIMEOUT_S = 60.0
FILL_WRITERS = 4
# etcd's default --max-request-bytes is 1.5 MiB; base64 in JSON adds a third.
MAX_FILL_VALUE_BYTES = 1024 * 1024
# Filling a bigger quota takes long enough to be a mistake.
MAX_FILL_QUOTA_BYTES = 256 * 1024 * 1024
_ALARM_WAIT_S = 5.0


class FaultError(RuntimeError):
    """A fault could not be injected; the message names the target and the reason."""


class EtcdFault:
    """Base of every injector: a kind, a target and validated parameters."""

    kind: str
    fixed_target: ClassVar[str | None] = None  # set when the fault targets no single member
    param_names: ClassVar[tuple[str, ...]] = ()
    min_members: ClassVar[int] = 1

    def __init__(
        self, cluster: EtcdCluster, target: str, params: Mapping[str, Any] | None = None
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

    async def _bring_back(self, names: list[str]) -> None:
        """Restart the members that are down, all at once (one alone may lack a quorum)."""
        if not self.cluster.running:
            return
        down = [n for n in names if self.cluster.member_status(n) not in ("running", "paused")]
        await asyncio.gather(*(self.cluster.restart_member(n) for n in down))


class MemberKill(EtcdFault):
    kind = "member_kill"

    def describe(self) -> str:
        return f"SIGKILL {self.target}; it stays down (data dir intact) until cleared"

    async def inject(self) -> None:
        self.cluster.kill_member(self.target)

    async def clear(self) -> None:
        await self._bring_back([self.target])


class LeaderKill(EtcdFault):
    kind = "leader_kill"
    fixed_target = LEADER_TARGET

    def describe(self) -> str:
        if self.target == LEADER_TARGET:
            return "SIGKILL whichever member leads at injection time; the rest must elect anew"
        return f"SIGKILL the leader ({self.target}); the rest must elect a new one"

    async def inject(self) -> None:
        leader = await self.cluster.leader()
        if leader is None:
            raise FaultError(f"{self.kind}: no member leads right now, so none can be killed")
        self.target = leader
        self.cluster.kill_member(leader)

    async def clear(self) -> None:
        if self.target != LEADER_TARGET:
            await self._bring_back([self.target])


class MemberPause(EtcdFault):
    kind = "member_pause"

    def describe(self) -> str:
        return f"SIGSTOP {self.target}: its ports stay open but it answers no one, peers included"

    async def inject(self) -> None:
        self.cluster.pause_member(self.target)

    async def clear(self) -> None:
        if self.cluster.member_status(self.target) == "paused":
            self.cluster.resume_member(self.target)


class QuorumKill(EtcdFault):
    kind = "quorum_kill"
    min_members = 3

    def __init__(
        self, cluster: EtcdCluster, target: str, params: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(cluster, target, params)
        self.victims: list[str] = self._pick()

    def _pick(self) -> list[str]:
        """The target and the members after it in name order, enough to leave a minority."""
        names = self.cluster.member_names
        count = len(names) // 2 + 1
        start = names.index(self.target)
        return [names[(start + i) % len(names)] for i in range(count)]

    def describe(self) -> str:
        return (
            f"SIGKILL {', '.join(self.victims)}: {len(self.victims)} of "
            f"{self.cluster.members} members, so the rest has no quorum and writes stop"
        )

    async def inject(self) -> None:
        for name in self.victims:
            if self.cluster.member_status(name) in ("running", "paused"):
                self.cluster.kill_member(name)

    async def clear(self) -> None:
        await self._bring_back(self.victims)


class PeerPartition(EtcdFault):
    kind = "peer_partition"
    min_members = 2

    def describe(self) -> str:
        return (
            f"cut {self.target} off from every other member, both ways: open peer "
            "connections drop and new ones are refused"
        )

    async def inject(self) -> None:
        self.cluster.peer_links.partition(self.target)

    async def clear(self) -> None:
        if self.cluster.running:
            self.cluster.peer_links.heal(self.target)


class PeerLatency(EtcdFault):
    kind = "peer_latency"
    param_names = ("ms",)
    min_members = 2

    @property
    def ms(self) -> float:
        return float(self.params.get("ms", DEFAULT_LATENCY_MS))

    def describe(self) -> str:
        return f"add {self.ms:g} ms each way on every peer link of {self.target}"

    async def inject(self) -> None:
        self.cluster.peer_links.set_latency(self.target, self.ms)

    async def clear(self) -> None:
        if self.cluster.running:
            self.cluster.peer_links.set_latency(self.target, 0)


class QuotaFill(EtcdFault):
    """Overwrites a few keys with large values until the backend passes its quota."""

    kind = "quota_fill"
    fixed_target = CLUSTER_TARGET
    param_names = ("value_bytes", "keys", "timeout_s")

    def __init__(
        self, cluster: EtcdCluster, target: str, params: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(cluster, target, params)
        self._task: asyncio.Task[None] | None = None
        self.result: dict[str, Any] = {}

    @property
    def value_bytes(self) -> int:
        return int(self.params.get("value_bytes", DEFAULT_FILL_VALUE_BYTES))

    @property
    def keys(self) -> int:
        return int(self.params.get("keys", DEFAULT_FILL_KEYS))

    @property
    def timeout_s(self) -> float:
        return float(self.params.get("timeout_s", DEFAULT_FILL_TIMEOUT_S))

    def describe(self) -> str:
        quota = (self.cluster.quota_backend_bytes or 0) / (1024 * 1024)
        return (
            f"overwrite {self.keys} keys with {self.value_bytes // 1024} KiB values until etcd "
            f"passes its {quota:g} MiB quota and raises NOSPACE; clearing stops the writer, "
            "only compaction, defragmentation and disarming the alarm fix etcd"
        )

    async def inject(self) -> None:
        self._task = asyncio.create_task(self._fill(), name="etcd-quota-fill")
        self.cluster.track(self._task)
        await self._task

    async def clear(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _fill(self) -> None:
        # Write through members that know a leader: one that just rejoined would hold a
        # write until etcd's request timeout.
        statuses = await self.cluster.statuses()
        names = [n for n, s in statuses.items() if s is not None and s.leader != 0]
        if not names:
            raise FaultError(f"{self.kind}: no running member with a leader to write through")
        started = time.monotonic()
        deadline = started + self.timeout_s
        full = asyncio.Event()
        counts = {"writes": 0, "bytes": 0, "errors": 0}
        last_error: list[str] = []

        async def writer(index: int) -> None:
            sequence = index
            while not full.is_set() and time.monotonic() < deadline:
                name = names[sequence % len(names)]
                key = f"{FILL_PREFIX}{sequence % self.keys}"
                value = base64.b64encode(os.urandom(self.value_bytes * 3 // 4)).decode()
                sequence += FILL_WRITERS
                try:
                    await self.cluster.client(name).put(key, value, timeout=5.0)
                except EtcdRequestError as exc:
                    if exc.no_space:
                        full.set()
                        return
                    counts["errors"] += 1
                    last_error[:] = [str(exc)]
                except EtcdError as exc:
                    counts["errors"] += 1
                    last_error[:] = [str(exc)]
                    await asyncio.sleep(0.05)
                else:
                    counts["writes"] += 1
                    counts["bytes"] += len(value)

        await asyncio.gather(*(writer(i) for i in range(FILL_WRITERS)))
        if not full.is_set():
            detail = f"; last error: {last_error[0]}" if last_error else ""
            raise FaultError(
                f"{self.kind}: {counts['writes']} writes in {self.timeout_s:g} s did not reach "
                f"the quota{detail}"
            )
        elapsed = time.monotonic() - started
        alarms = await self._wait_for_alarm(names)
        self.result = {**counts, "seconds": round(elapsed, 3), "alarmed_members": alarms}
        log.info("quota_fill: NOSPACE after %s", self.result)

    async def _wait_for_alarm(self, names: list[str]) -> list[str]:
        """The member that refused a write raises the alarm through raft; wait to see it.

        Returns the members that raised NOSPACE."""
        deadline = time.monotonic() + _ALARM_WAIT_S
        while True:
            for name in names:
                try:
                    alarms = await self.cluster.client(name).alarms(timeout=1.0)
                except EtcdError:
                    continue
                raised = [
                    self.cluster.name_of(a.member_id) or f"{a.member_id:x}"
                    for a in alarms
                    if a.alarm == "NOSPACE"
                ]
                if raised:
                    return sorted(raised)
            if time.monotonic() > deadline:
                raise FaultError(f"{self.kind}: writes were refused but no NOSPACE alarm shows")
            await asyncio.sleep(0.05)


_FAULTS: dict[str, type[EtcdFault]] = {
    cls.kind: cls
    for cls in (
        MemberKill,
        LeaderKill,
        MemberPause,
        QuorumKill,
        PeerPartition,
        PeerLatency,
        QuotaFill,
    )
}
FAULT_KINDS: tuple[str, ...] = tuple(_FAULTS)


def _non_negative_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError
    return float(value)


def _positive_number(value: Any) -> float:
    if _non_negative_number(value) <= 0:
        raise ValueError
    return float(value)


def _int_between(low: int, high: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError
        return value

    return check


_PARAM_CHECKS: dict[tuple[str, str], tuple[Callable[[Any], Any], str]] = {
    ("peer_latency", "ms"): (_non_negative_number, "a number of milliseconds >= 0"),
    ("quota_fill", "value_bytes"): (
        _int_between(1024, MAX_FILL_VALUE_BYTES),
        f"an integer number of bytes from 1024 to {MAX_FILL_VALUE_BYTES}",
    ),
    ("quota_fill", "keys"): (_int_between(1, 1000), "an integer from 1 to 1000"),
    ("quota_fill", "timeout_s"): (_positive_number, "a number of seconds > 0"),
}


def make_fault(
    cluster: EtcdCluster, kind: str, target: str | None, params: Mapping[str, Any]
) -> EtcdFault:
    """Build one fault; ValueError names the valid kinds, targets or parameters."""
    cls = _FAULTS.get(kind)
    if cls is None:
        raise ValueError(f"unknown fault kind {kind!r} (valid: {', '.join(FAULT_KINDS)})")
    members = cluster.member_names
    if len(members) < cls.min_members:
        raise ValueError(
            f"fault {kind!r} needs at least {cls.min_members} members; this cluster has "
            f"{len(members)}"
        )
    if cls.fixed_target is not None:
        valid = [cls.fixed_target]
        default = cls.fixed_target
    else:
        valid = members
        default = members[1] if len(members) > 1 else members[0]
    chosen = default if target is None else target
    if chosen not in valid:
        raise ValueError(
            f"fault {kind!r} cannot target {chosen!r} (valid targets: {', '.join(valid)})"
        )
    if kind == "quota_fill":
        quota = cluster.quota_backend_bytes
        if quota is None or quota > MAX_FILL_QUOTA_BYTES:
            shown = "etcd's default 2 GiB" if quota is None else f"{quota} bytes"
            raise ValueError(
                f"fault 'quota_fill' needs a cluster with a small quota_backend_bytes "
                f"(e.g. 16 MiB, at most {MAX_FILL_QUOTA_BYTES // (1024 * 1024)} MiB); "
                f"this one has {shown}"
            )
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
