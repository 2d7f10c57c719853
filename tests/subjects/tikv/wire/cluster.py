"""The cluster behind the PD payloads: three PD members, three stores, 48 regions.

One model, changed per situation the way the real cluster would change: a store whose
process died 30 s ago is Disconnected with its leaders gone elsewhere; 35 minutes later it
is Down, its peers reported down by their leaders, three regions down to two peers after
an admin remove-peer (miss-peer) and one more such operator still running.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone

CST = timezone(timedelta(hours=8))  # a tiup deployment's hosts, as PD prints its times
CLUSTER_ID = 7381573483094745213  # uint64 beyond 2**53, as PD's cluster ids are
GIB = 1024**3
TIB = 1024**4


@dataclass(frozen=True)
class Member:
    name: str
    member_id: int

    @property
    def client_url(self) -> str:
        return f"http://{self.name}:2379"

    @property
    def peer_url(self) -> str:
        return f"http://{self.name}:2380"


MEMBERS = (
    Member("pd-0", 3474484975246189105),
    Member("pd-1", 10847498327590186210),
    Member("pd-2", 16312960531187329114),
)


@dataclass
class StoreModel:
    id: int
    name: str
    capacity: int = TIB
    available: int = 612 * GIB + 300 * 1024**2
    used: int = 380 * GIB
    heartbeat_age: timedelta = timedelta(seconds=7, microseconds=412_334)
    started_ago: timedelta = timedelta(days=3, hours=4, minutes=12)
    state_name: str = "Up"
    state: int = 0  # metapb.StoreState: 0 Up, 1 Offline, 2 Tombstone
    node_state: int = 1  # metapb.NodeState: 1 Serving, 2 Removing
    leader_weight: float = 1.0
    region_weight: float = 1.0
    slow_score: int = 1
    pause_leader_transfer: bool = False


@dataclass
class RegionModel:
    id: int
    start_key: bytes
    end_key: bytes
    peers: list[tuple[int, int]]  # (peer id, store id)
    leader_store: int | None
    conf_ver: int = 5
    version: int = 31
    size_mib: int = 96
    keys: int = 960_000
    written_bytes: int = 0
    read_bytes: int = 0
    down: list[tuple[int, int]] = field(default_factory=list)  # (store id, down seconds)
    pending: list[int] = field(default_factory=list)  # store ids

    def peer_on(self, store_id: int) -> int | None:
        return next((pid for pid, sid in self.peers if sid == store_id), None)


def _memcomparable(raw: bytes) -> bytes:
    """TiKV's codec EncodeBytes: 8-byte groups, zero-padded, each with a 0xFF-pad marker."""
    out = bytearray()
    for start in range(0, len(raw) + 1, 8):
        group = raw[start : start + 8]
        pad = 8 - len(group)
        out += group + b"\x00" * pad + bytes([0xFF - pad])
    return bytes(out)


def region_key(index: int) -> bytes:
    """The region boundary PD sees: TiDB's record key of table 106, handle index*10000."""
    if index == 0:
        return b""
    table = (106 ^ (1 << 63)).to_bytes(8, "big")
    handle = ((index * 10000) ^ (1 << 63)).to_bytes(8, "big")
    return _memcomparable(b"t" + table + b"_r" + handle)


@dataclass
class Situation:
    name: str
    description: str
    recorded_at: datetime
    stores: list[StoreModel]
    regions: list[RegionModel]
    leader: str = "pd-0"
    down_members: set[str] = field(default_factory=set)
    operators: list[dict[str, object]] = field(default_factory=list)
    evict_leader_stores: list[int] = field(default_factory=list)
    low_space_stores: set[int] = field(default_factory=set)
    store_ids_unhealthy: set[int] = field(default_factory=set)

    def store(self, store_id: int) -> StoreModel:
        return next(s for s in self.stores if s.id == store_id)

    def region(self, region_id: int) -> RegionModel:
        return next(r for r in self.regions if r.id == region_id)


RECORDED_AT = datetime(2025, 6, 2, 9, 30, 0, 118_000, tzinfo=CST)
STORE_IDS = (1, 4, 5)
N_REGIONS = 48


def healthy() -> Situation:
    stores = [StoreModel(1, "tikv-0"), StoreModel(4, "tikv-1"), StoreModel(5, "tikv-2")]
    regions = []
    for i in range(N_REGIONS):
        region_id = 2 + 4 * i
        peers = [(region_id + 1 + j, sid) for j, sid in enumerate(STORE_IDS)]
        regions.append(
            RegionModel(
                id=region_id,
                start_key=region_key(i),
                end_key=region_key(i + 1) if i + 1 < N_REGIONS else b"",
                peers=peers,
                leader_store=STORE_IDS[i % 3],
                size_mib=80 + (i * 7) % 30,
                keys=(80 + (i * 7) % 30) * 10_240,
                written_bytes=(i % 5) * 131_072,
                read_bytes=(i % 7) * 262_144,
            )
        )
    return Situation(
        name="healthy",
        description="3 PD members with pd-0 leading, 3 stores Up, 48 regions of 3 peers",
        recorded_at=RECORDED_AT,
        stores=stores,
        regions=regions,
        operators=[
            {
                "desc": "balance-leader",
                "brief": "transfer leader: store 1 to 4",
                "kind": "leader",
                "region": 14,
                "steps": ["transfer leader from store 1 to store 4"],
                "timeout": "1m0s",
                "age_s": 0.41,
            }
        ],
    )


def _leaders_off(situation: Situation, store_id: int, keep: int = 0) -> None:
    """Move the store's leaders to the other stores in turn, leaving it its first `keep`."""
    others = [s for s in STORE_IDS if s != store_id]
    led = [r for r in situation.regions if r.leader_store == store_id]
    for n, region in enumerate(led[keep:]):
        region.leader_store = others[n % len(others)]


def store_disconnected() -> Situation:
    s = healthy()
    s.name = "store-disconnected"
    s.description = (
        "store 5 (tikv-2) stopped answering 30 s ago: Disconnected, its leaders"
        " re-elected on stores 1 and 4, no peer reported down yet"
    )
    s.store(5).heartbeat_age = timedelta(seconds=30, microseconds=507_211)
    s.store(5).state_name = "Disconnected"
    _leaders_off(s, 5)
    s.operators = []
    return s


# The admin removed store 5's peer from these regions; one more removal is under way.
REMOVED_PEER_REGIONS = (2, 6, 10)
REMOVING_PEER_REGION = 18


def store_down() -> Situation:
    s = store_disconnected()
    s.name = "store-down"
    s.description = (
        "store 5 (tikv-2) gone for 35 min (max-store-down-time 30m): Down and"
        " unhealthy; 45 regions report its peer down, 20 of them pending; an"
        " admin removed its peer from 3 regions (miss-peer: 2 of 3 peers, no"
        " fourth store to replace it) and one more remove-peer runs"
    )
    s.store(5).heartbeat_age = timedelta(minutes=35, seconds=12, microseconds=88_000)
    s.store(5).state_name = "Down"
    s.store_ids_unhealthy = {5}
    for region in s.regions:
        if region.id in REMOVED_PEER_REGIONS:
            region.peers = [(pid, sid) for pid, sid in region.peers if sid != 5]
            region.conf_ver += 1
            continue
        region.down = [(5, 2_112)]
        if region.id % 8 == 2 and len([r for r in s.regions if r.pending]) < 20:
            region.pending = [5]
    s.operators = [
        {
            "desc": "admin-remove-peer",
            "brief": "rm peer: store [5]",
            "kind": "admin,region",
            "region": REMOVING_PEER_REGION,
            "steps": ["remove peer on store 5"],
            "timeout": "6m0s",
            "age_s": 2.73,
        }
    ]
    return s


def pd_member_down() -> Situation:
    s = healthy()
    s.name = "pd-member-down"
    s.description = "PD member pd-2 is down (health false, still listed); pd-0 leads"
    s.down_members = {"pd-2"}
    return s


def store_disk_85() -> Situation:
    s = healthy()
    s.name = "store-disk-85"
    s.description = (
        "store 4 (tikv-1) at 85 % disk: 15 % available, under PD's low-space"
        " ratio (0.8), so PD schedules no new region onto it"
    )
    st = s.store(4)
    st.available = int(TIB * 0.15)
    st.used = 842 * GIB
    s.low_space_stores = {4}
    return s


def leaders_evicted() -> Situation:
    s = healthy()
    s.name = "leaders-evicted"
    s.description = "evict-leader-scheduler holds leaders off store 5; all stores Up"
    _leaders_off(s, 5)
    s.evict_leader_stores = [5]
    s.store(5).pause_leader_transfer = True
    s.operators = []
    return s


SLOW_STORE_LEADERS_LEFT = 4


def slow_store() -> Situation:
    s = healthy()
    s.name = "slow-store"
    s.description = (
        "store 5 (tikv-2)'s disk stalls: TiKV reports slow score 100 and PD"
        " moves its leaders away; 4 of its 16 leaders are left"
    )
    s.store(5).slow_score = 100
    _leaders_off(s, 5, keep=SLOW_STORE_LEADERS_LEFT)
    region = next(r for r in s.regions if r.leader_store == 5)
    s.operators = [
        {
            "desc": "evict-slow-store",
            "brief": "transfer leader: store 5 to 1",
            "kind": "leader",
            "region": region.id,
            "steps": ["transfer leader from store 5 to store 1"],
            "timeout": "1m0s",
            "age_s": 0.19,
        }
    ]
    return s


def slow_store_draining() -> Situation:
    s = slow_store()
    s.name = "slow-store-draining"
    s.description = (
        "store 5 (tikv-2) slow, an evict-leader-scheduler just added for it:"
        " 4 leaders still to move"
    )
    s.evict_leader_stores = [5]
    s.store(5).pause_leader_transfer = True
    s.operators = []
    return s


def store_disk_full() -> Situation:
    s = store_disconnected()
    s.name = "store-disk-full"
    s.description = (
        "store 5 (tikv-2) stopped heartbeating 30 s ago; its last heartbeat"
        " reported 2 GiB (0.2 %) of 1 TiB available"
    )
    st = s.store(5)
    st.available = 2 * GIB
    st.used = 1010 * GIB
    s.low_space_stores = {5}
    return s


def store_offline() -> Situation:
    s = healthy()
    s.name = "store-offline"
    s.description = (
        "store 5 (tikv-2) is being removed (Offline, Removing) but keeps all 48"
        " of its regions: 2 other stores cannot hold 3 replicas"
    )
    st = s.store(5)
    st.state, st.node_state, st.state_name = 1, 2, "Offline"
    _leaders_off(s, 5)
    s.operators = []
    return s


def store_recovering() -> Situation:
    s = store_disconnected()
    s.name = "store-recovering"
    s.description = (
        "store 5 (tikv-2) restarted 45 s ago after 12 min away: Up with no"
        " leaders yet; 30 regions still report its peer down (their last region"
        " heartbeat predates the restart) and 20 are catching up (pending)"
    )
    st = s.store(5)
    st.state_name = "Up"
    st.heartbeat_age = timedelta(seconds=3, microseconds=205_114)
    st.started_ago = timedelta(seconds=45)
    for n, region in enumerate(s.regions):
        if n < 30:
            region.down = [(5, 702)]
        if n % 2 == 0 and n < 40:
            region.pending = [5]
    return s


SITUATIONS = {
    f().name: f
    for f in (
        healthy,
        store_disconnected,
        store_down,
        pd_member_down,
        store_disk_85,
        leaders_evicted,
        slow_store,
        slow_store_draining,
        store_disk_full,
        store_offline,
        store_recovering,
    )
}


def situation(name: str) -> Situation:
    return copy.deepcopy(SITUATIONS[name]())


__all__ = ["MEMBERS", "SITUATIONS", "Situation", "replace", "situation"]
