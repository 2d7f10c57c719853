"""What the operator may do to a TiKV cluster: PD's operator and scheduler APIs, each run
checked first against what PD says now and confirmed by reading PD back.

PD's refusals (unknown store, store not healthy, an operator already there) come back as
PD wrote them; they are final, so a refused request is not sent again. Restarting or
resuming a store's or PD member's process needs a container backend (a compose stack,
`stack.py`), which a console attached by endpoints alone lacks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from operator_console.contract import ActionCatalog, ActionSpec, Effect, ProcessBackend, Risk
from operator_console.subjects.tikv.pd import PDClient
from operator_console.subjects.tikv.pd_errors import (
    OperatorNotFoundError,
    PDError,
    SchedulerNotFoundError,
)
from operator_console.subjects.tikv.state import region_target, store_target, target_id

NO_PROCESS = (
    "needs a container backend (watch tikv --compose DIR): this console reaches the cluster "
    "only through PD's HTTP API and Prometheus; restart it by hand"
)
_MAX_ID = 2**53  # PD reads ids into float64


class ActionFailed(RuntimeError):
    """PD refused the action or it would be unsafe; the message names the target and why."""


def _ref(kind: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if isinstance(value, bool):
            raise ValueError(f"a {kind} id, not a boolean")
        if isinstance(value, int):
            number = value
        elif isinstance(value, str) and value.isdigit():
            number = int(value)
        elif isinstance(value, str) and target_id(value, kind) is not None:
            number = target_id(value, kind) or 0
        else:
            raise ValueError(f"a {kind} id such as 5 or {kind}-5, not {value!r}")
        if not 1 <= number <= _MAX_ID:
            raise ValueError(f"{kind} id {number} is out of range")
        return f"{kind}-{number}"

    return parse


StoreRef = Annotated[
    str, BeforeValidator(_ref("store")), Field(description="a store: its id (5) or store-5")
]
RegionRef = Annotated[
    str, BeforeValidator(_ref("region")), Field(description="a region: its id (14) or region-14")
]
Weight = Annotated[float, Field(ge=0, le=1000, description="PD weight (1 is the default)")]


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TransferLeaderParams(_Params):
    region: RegionRef
    to_store: StoreRef


class TransferPeerParams(_Params):
    region: RegionRef
    from_store: StoreRef
    to_store: StoreRef


class RemovePeerParams(_Params):
    region: RegionRef
    store: StoreRef


class StoreParams(_Params):
    store: StoreRef


class StoreWeightParams(_Params):
    store: StoreRef
    leader_weight: Weight
    region_weight: Weight


def _id(ref: str, kind: str) -> int:
    number = target_id(ref, kind)
    assert number is not None, f"validated {kind} reference {ref!r}"
    return number


def _pd(exc: PDError) -> ActionFailed:
    return ActionFailed(str(exc))


class TikvActions:
    """The action bodies, all through PD's HTTP API."""

    def __init__(self, pd: PDClient) -> None:
        self.pd = pd

    async def _operator_status(self, region: int) -> str:
        try:
            status = await self.pd.operator_status(region)
        except OperatorNotFoundError:
            return "PD lists no pending operator on it now"
        except PDError as exc:
            return f"its operator could not be read back: {exc}"
        return status.split(", operator:")[0] or status

    async def transfer_leader(self, p: TransferLeaderParams) -> str:
        region, to = _id(p.region, "region"), _id(p.to_store, "store")
        try:
            answer = await self.pd.transfer_leader(region, to)
        except PDError as exc:
            raise _pd(exc) from None
        status = await self._operator_status(region)
        return f"PD: {answer} transfer-leader of {p.region} to {p.to_store}; {status}"

    async def transfer_peer(self, p: TransferPeerParams) -> str:
        if p.from_store == p.to_store:
            raise ActionFailed(f"transfer_peer of {p.region}: from and to are both {p.to_store}")
        region = _id(p.region, "region")
        try:
            answer = await self.pd.transfer_peer(
                region, _id(p.from_store, "store"), _id(p.to_store, "store")
            )
        except PDError as exc:
            raise _pd(exc) from None
        status = await self._operator_status(region)
        return (
            f"PD: {answer} transfer-peer of {p.region} from {p.from_store} to {p.to_store}; "
            f"{status}"
        )

    async def remove_peer(self, p: RemovePeerParams) -> str:
        region_id, store_id = _id(p.region, "region"), _id(p.store, "store")
        try:
            region = await self.pd.region(region_id)
        except PDError as exc:
            raise _pd(exc) from None
        voters = [peer for peer in region.peers if not peer.is_learner]
        down = {peer.store_id for peer, _ in region.down_peers}
        if store_id in {peer.store_id for peer in voters}:
            left = [peer for peer in voters if peer.store_id != store_id]
            healthy = [peer for peer in left if peer.store_id not in down]
            if len(healthy) < len(left) // 2 + 1:
                raise ActionFailed(
                    f"refusing to remove {p.region}'s peer on {p.store}: {len(healthy)} of the "
                    f"{len(left)} voters left would be healthy, short of a raft majority"
                )
        try:
            answer = await self.pd.remove_peer(region_id, store_id)
        except PDError as exc:
            raise _pd(exc) from None
        status = await self._operator_status(region_id)
        return f"PD: {answer} remove-peer of {p.region} on {p.store}; {status}"

    async def drain_store(self, p: StoreParams) -> str:
        store_id = _id(p.store, "store")
        try:
            stores, evicted = await self.pd.stores(), await self.pd.evict_leader_stores()
        except PDError as exc:
            raise _pd(exc) from None
        others = [
            s for s in stores if s.id != store_id and s.state_name == "Up" and s.id not in evicted
        ]
        if any(s.id == store_id for s in stores) and not others:
            raise ActionFailed(
                f"refusing to drain {p.store}: no other Up store could take its leaders"
            )
        try:
            answer = await self.pd.add_evict_leader_scheduler(store_id)
            listed = await self.pd.evict_leader_stores()
        except PDError as exc:
            raise _pd(exc) from None
        if store_id not in listed:
            raise ActionFailed(
                f"PD answered {answer!r} but its evict-leader-scheduler does not list {p.store}"
            )
        return (
            f"PD: {answer} evict-leader-scheduler now holds leaders off {p.store} "
            f"(stores {', '.join(store_target(i) for i in listed)})"
        )

    async def undrain_store(self, p: StoreParams) -> str:
        store_id = _id(p.store, "store")
        try:
            await self.pd.remove_evict_leader_scheduler(store_id)
        except SchedulerNotFoundError:
            return f"{p.store} had no evict-leader entry: its leaders were not held off"
        except PDError as exc:
            raise _pd(exc) from None
        return f"PD removed {p.store} from the evict-leader-scheduler; leaders may return to it"

    async def set_store_weight(self, p: StoreWeightParams) -> str:
        store_id = _id(p.store, "store")
        try:
            answer = await self.pd.set_store_weight(
                store_id, leader=p.leader_weight, region=p.region_weight
            )
        except PDError as exc:
            raise _pd(exc) from None
        return (
            f"PD: {answer} {p.store} now weighs {p.leader_weight:g} for leaders and "
            f"{p.region_weight:g} for regions"
        )


@dataclass(frozen=True, slots=True)
class _Def:
    name: str
    description: str
    params: type[BaseModel]
    risk: Risk
    restores: tuple[str, ...]
    targets: tuple[str, ...]
    effect: Effect = "fix"
    undo: str | None = None
    cause: str | None = None
    timeout_s: float = 10.0


ACTIONS: tuple[_Def, ...] = (
    _Def(
        "transfer_leader",
        "Ask PD to move one region's leader to another store that holds a voter of it "
        "(POST /pd/api/v1/operators, transfer-leader).",
        TransferLeaderParams,
        "low",
        ("leader_imbalance",),
        ("region", "to_store"),
    ),
    _Def(
        "transfer_peer",
        "Ask PD to move one region's replica from one store to another (transfer-peer): the "
        "target store receives a snapshot of the region.",
        TransferPeerParams,
        "medium",
        ("regions_down_peer", "regions_pending_peer", "store_offline_stuck"),
        ("region", "from_store", "to_store"),
    ),
    _Def(
        "remove_peer",
        "Ask PD to remove one region's replica from a store (remove-peer); refused when the "
        "voters left would lack a healthy raft majority. PD adds a replica back elsewhere "
        "when a store has room.",
        RemovePeerParams,
        "medium",
        ("regions_down_peer",),
        ("region", "store"),
    ),
    _Def(
        "drain_store",
        "Hold every leader off a store (evict-leader-scheduler), moving them all at once to "
        "the other stores. A mitigation: the store stops serving reads and writes of its own, "
        "whatever makes it slow stays.",
        StoreParams,
        "high",
        ("latency_slo", "leader_imbalance"),
        ("store",),
        effect="mitigate",
        undo="undrain_store",
        cause="store_slow",
        timeout_s=15.0,
    ),
    _Def(
        "undrain_store",
        "Let a drained store take leaders again (remove its evict-leader entry); PD's "
        "balance-leader brings them back gradually.",
        StoreParams,
        "low",
        ("leader_imbalance",),
        ("store",),
    ),
    _Def(
        "set_store_weight",
        "Set a store's leader and region weights (1 is the default): PD then rebalances "
        "leaders and regions across the cluster to match, moving many of them.",
        StoreWeightParams,
        "high",
        ("leader_imbalance", "store_disk_low"),
        ("store",),
    ),
)
# Done through a compose stack's containers (stack.py).
STACK_ACTION_NAMES: tuple[str, ...] = ("restart_store", "resume_store", "restart_pd_member")
ACTION_NAMES: tuple[str, ...] = (*(d.name for d in ACTIONS), *STACK_ACTION_NAMES)
UNAVAILABLE: dict[str, str] = dict.fromkeys(STACK_ACTION_NAMES, NO_PROCESS)


def build_catalog(pd: PDClient, processes: ProcessBackend | None = None) -> ActionCatalog:
    """Every action PD's API can do; the process actions through the container backend when
    there is one, else listed as unavailable with the reason."""
    acts = TikvActions(pd)
    specs = []
    for d in ACTIONS:
        run: Callable[[Any], Awaitable[str]] = getattr(acts, d.name)
        specs.append(
            ActionSpec(
                d.name,
                d.description,
                d.params,
                d.risk,
                d.restores,
                d.timeout_s,
                run,
                # PD's refusals are final, and the client already tries another member
                # whenever a request cannot have been applied.
                retry=False,
                target_params=d.targets,
                effect=d.effect,
                undo=d.undo,
                cause=d.cause,
            )
        )
    if processes is None:
        return ActionCatalog(tuple(specs), dict(UNAVAILABLE))
    from operator_console.subjects.tikv.stack import stack_actions

    return ActionCatalog((*specs, *stack_actions(pd, processes)), {})


__all__ = [
    "ACTION_NAMES",
    "STACK_ACTION_NAMES",
    "ActionFailed",
    "StoreRef",
    "build_catalog",
    "region_target",
    "store_target",
]
