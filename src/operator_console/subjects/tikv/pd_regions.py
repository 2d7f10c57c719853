"""Typed views of PD's region payloads: RegionInfo, region statistics and checks, operators.

Decoded as server/api/region.go (v7.5) and pkg/response/region.go (v8.5+) write them,
whether easyjson's compact form or encoding/json's indented one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from operator_console.subjects.tikv.pd_models import (
    MalformedPayloadError,
    arr,
    obj,
    text,
    uint,
)

# ------------------------------------------------------------------------ regions


@dataclass(frozen=True, slots=True)
class Peer:
    """A region's peer as PD's MetaPeer: metapb.Peer plus its role's name."""

    id: int
    store_id: int
    role_name: str
    is_witness: bool = False

    @property
    def is_learner(self) -> bool:
        return self.role_name == "Learner"

    @classmethod
    def from_json(cls, raw: object, where: str) -> Peer:
        data = obj(raw, where)
        return cls(
            id=uint(data, "id", where),
            store_id=uint(data, "store_id", where),
            role_name=text(data, "role_name", where) or "Voter",
            is_witness=bool(data.get("is_witness", False)),
        )


@dataclass(frozen=True, slots=True)
class Region:
    """A region as PD's RegionInfo; keys are PD's upper-case hex of the raw key."""

    id: int
    start_key: str
    end_key: str
    conf_ver: int
    version: int
    peers: tuple[Peer, ...]
    leader: Peer | None
    down_peers: tuple[tuple[Peer, int], ...]
    pending_peers: tuple[Peer, ...]
    approximate_size_mib: int
    approximate_keys: int
    written_bytes: int = 0
    read_bytes: int = 0

    @property
    def store_ids(self) -> tuple[int, ...]:
        return tuple(p.store_id for p in self.peers)

    @classmethod
    def from_json(cls, raw: object, where: str = "region") -> Region:
        data = obj(raw, where)
        epoch = obj(data.get("epoch") or {}, f"{where}.epoch")
        leader = Peer.from_json(data.get("leader") or {}, f"{where}.leader")
        down: list[tuple[Peer, int]] = []
        for i, item in enumerate(arr(data.get("down_peers"), f"{where}.down_peers")):
            stats = obj(item, f"{where}.down_peers[{i}]")
            down.append(
                (
                    Peer.from_json(stats.get("peer") or {}, f"{where}.down_peers[{i}].peer"),
                    uint(stats, "down_seconds", f"{where}.down_peers[{i}]"),
                )
            )
        return cls(
            id=uint(data, "id", where),
            start_key=text(data, "start_key", where),
            end_key=text(data, "end_key", where),
            conf_ver=uint(epoch, "conf_ver", f"{where}.epoch"),
            version=uint(epoch, "version", f"{where}.epoch"),
            peers=tuple(
                Peer.from_json(p, f"{where}.peers[{i}]")
                for i, p in enumerate(arr(data.get("peers"), f"{where}.peers"))
            ),
            # A region without a leader is written as {"role_name": ""}: no id, no store.
            leader=leader if leader.id else None,
            down_peers=tuple(down),
            pending_peers=tuple(
                Peer.from_json(p, f"{where}.pending_peers[{i}]")
                for i, p in enumerate(arr(data.get("pending_peers"), f"{where}.pending_peers"))
            ),
            approximate_size_mib=uint(data, "approximate_size", where),
            approximate_keys=uint(data, "approximate_keys", where),
            written_bytes=uint(data, "written_bytes", where),
            read_bytes=uint(data, "read_bytes", where),
        )


@dataclass(frozen=True, slots=True)
class RegionStats:
    """statistics.RegionStats from GET /pd/api/v1/stats/region; maps are keyed by store id."""

    count: int
    empty_count: int
    storage_size_mib: int
    storage_keys: int
    store_leader_count: Mapping[int, int] = field(default_factory=dict)
    store_peer_count: Mapping[int, int] = field(default_factory=dict)
    store_leader_size_mib: Mapping[int, int] = field(default_factory=dict)
    store_peer_size_mib: Mapping[int, int] = field(default_factory=dict)

    @classmethod
    def from_json(cls, raw: object) -> RegionStats:
        data = obj(raw, "region stats")

        def per_store(key: str) -> dict[int, int]:
            # Go writes map[uint64]int with string keys; `?count` leaves the maps null.
            m = data.get(key)
            if m is None:
                return {}
            out: dict[int, int] = {}
            for k, v in obj(m, f"region stats.{key}").items():
                if not str(k).isdigit() or isinstance(v, bool) or not isinstance(v, int):
                    raise MalformedPayloadError(f"region stats.{key}: bad entry {k!r}: {v!r}")
                out[int(k)] = v
            return out

        return cls(
            count=uint(data, "count", "region stats"),
            empty_count=uint(data, "empty_count", "region stats"),
            storage_size_mib=uint(data, "storage_size", "region stats"),
            storage_keys=uint(data, "storage_keys", "region stats"),
            store_leader_count=per_store("store_leader_count"),
            store_peer_count=per_store("store_peer_count"),
            store_leader_size_mib=per_store("store_leader_size"),
            store_peer_size_mib=per_store("store_peer_size"),
        )


# ---------------------------------------------------------------------- operators

# pkg/schedule/operator/operator.go `(*Operator).String`, which is also its MarshalJSON:
#   desc {brief} (kind:K, region:ID(VER, CONFVER), createAt:T, startAt:T, currentStep:N,
#   size:N, steps:[0:{...}, 1:{...}], timeout:[D]) [finished] [timeout]
_OPERATOR = re.compile(
    r"^(?P<desc>\S+) \{(?P<brief>.*?)\} \(kind:(?P<kind>[\w,-]+), "
    r"region:(?P<region>\d+)\((?P<version>\d+), (?P<conf_ver>\d+)\), "
    r"createAt:(?P<create>.*?), startAt:(?P<start>.*?), currentStep:(?P<step>\d+), "
    r"size:(?P<size>-?\d+), steps:\[(?P<steps>.*)\], timeout:\[(?P<timeout>[^\]]*)\]\)"
    r"(?P<finished> finished)?(?P<timed_out> timeout)?$"
)
_OPERATOR_STEP = re.compile(r"(?:^|, )\d+:\{")


@dataclass(frozen=True, slots=True)
class Operator:
    """A pending operator as GET /pd/api/v1/operators lists it (a string per operator)."""

    desc: str
    brief: str
    kinds: tuple[str, ...]
    region_id: int
    region_version: int
    region_conf_ver: int
    current_step: int
    steps: tuple[str, ...]
    timeout: str
    finished: bool
    timed_out: bool
    created_at: str
    started_at: str

    @classmethod
    def parse(cls, raw: object, where: str = "operator") -> Operator:
        if not isinstance(raw, str):
            raise MalformedPayloadError(f"{where}: expected PD's operator string, got {raw!r}")
        match = _OPERATOR.match(raw)
        if match is None:
            raise MalformedPayloadError(f"{where}: not PD's operator format: {raw[:200]!r}")
        steps_text = match.group("steps")
        steps = [s for s in _OPERATOR_STEP.split(steps_text) if s]
        return cls(
            desc=match.group("desc"),
            brief=match.group("brief"),
            kinds=tuple(match.group("kind").split(",")),
            region_id=int(match.group("region")),
            region_version=int(match.group("version")),
            region_conf_ver=int(match.group("conf_ver")),
            current_step=int(match.group("step")),
            steps=tuple(s[:-1] if s.endswith("}") else s for s in steps),
            timeout=match.group("timeout"),
            finished=match.group("finished") is not None,
            timed_out=match.group("timed_out") is not None,
            created_at=match.group("create"),
            started_at=match.group("start"),
        )


@dataclass(frozen=True, slots=True)
class RegionBrief:
    """The part of a listed region an operator needs: where its peers, leader and faults are."""

    id: int
    leader_store_id: int | None
    peer_store_ids: tuple[int, ...]
    down_store_ids: tuple[int, ...] = ()
    pending_store_ids: tuple[int, ...] = ()

    @classmethod
    def from_json(cls, raw: object, where: str = "region") -> RegionBrief:
        data = obj(raw, where)
        leader = obj(data.get("leader") or {}, f"{where}.leader")
        return cls(
            id=uint(data, "id", where),
            leader_store_id=uint(leader, "store_id", f"{where}.leader") or None,
            peer_store_ids=_store_ids(data.get("peers"), f"{where}.peers"),
            down_store_ids=tuple(
                uint(obj(obj(d, f"{where}.down_peers").get("peer") or {}, where), "store_id", where)
                for d in arr(data.get("down_peers"), f"{where}.down_peers")
            ),
            pending_store_ids=_store_ids(data.get("pending_peers"), f"{where}.pending_peers"),
        )


def _store_ids(raw: object, where: str) -> tuple[int, ...]:
    return tuple(uint(obj(p, where), "store_id", where) for p in arr(raw, where))


@dataclass(frozen=True, slots=True)
class RegionCheck:
    """What one /regions/check/{kind} listing says: how many regions, a sample, stores hit."""

    kind: str
    count: int
    sample: tuple[RegionBrief, ...]
    # Peers each store holds among the listed regions' down (or pending) peers.
    down_peers_by_store: Mapping[int, int] = field(default_factory=dict)
    pending_peers_by_store: Mapping[int, int] = field(default_factory=dict)

    @property
    def sample_ids(self) -> tuple[int, ...]:
        return tuple(r.id for r in self.sample)
