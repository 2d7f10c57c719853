"""Typed views of PD's HTTP payloads, decoded the way PD v7.5 to v26.3 encode them.

Each decoder names the PD source it follows. PD writes some numbers as strings
(`typeutil.ByteSize` as "1.5TiB", `typeutil.Duration` as "1h2m3s", schedule booleans
as "true"), protobuf enums as numbers, and uint64 ids beyond 2**53: ids are kept as
Python ints (never through float), sizes parsed with `Decimal`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any


class MalformedPayloadError(ValueError):
    """A payload does not have the shape PD's encoder gives it; the message names the field."""


# pkg/utils/typeutil/size.go writes docker/go-units' BytesSize ("%.4g" + binary unit) and
# reads it back with units.RAMInBytes, which takes any case and an optional "i"/"B".
_BYTE_SIZE = re.compile(r"^(\d+(?:\.\d+)?) ?([kmgtpezy])?i?b?$", re.IGNORECASE)
_BINARY_POWER = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5, "e": 6, "z": 7, "y": 8}
# Go's time.Duration.String(): "1h2m3.5s", "350ms", "0s".
_GO_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|μs|ms|s|m|h)")
_GO_DURATION_UNIT = {
    "ns": Decimal("1e-9"),
    "us": Decimal("1e-6"),
    "µs": Decimal("1e-6"),
    "μs": Decimal("1e-6"),
    "ms": Decimal("1e-3"),
    "s": Decimal(1),
    "m": Decimal(60),
    "h": Decimal(3600),
}
# kvproto metapb.StoreState and metapb.NodeState, which encoding/json writes as numbers.
STORE_STATES = {0: "Up", 1: "Offline", 2: "Tombstone"}
NODE_STATES = {0: "Preparing", 1: "Serving", 2: "Removing", 3: "Removed"}


def parse_byte_size(value: object, where: str = "size") -> int | None:
    """Bytes from PD's ByteSize ("1.5TiB", "0B") or a plain number; None when absent."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise MalformedPayloadError(f"{where}: expected a byte size, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        match = _BYTE_SIZE.match(value.strip())
        if match:
            number, unit = match.group(1), (match.group(2) or "").lower()
            return int(Decimal(number) * (1024 ** _BINARY_POWER[unit]))
    raise MalformedPayloadError(f"{where}: {value!r} is not a PD byte size such as '1.5TiB'")


def parse_go_duration(value: object, where: str = "duration") -> float | None:
    """Seconds from Go's Duration text ("1h2m3.5s"); None when absent."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        sign = -1 if text.startswith("-") else 1
        text = text.lstrip("+-")
        if text == "0":
            return 0.0
        total = Decimal(0)
        pos = 0
        for match in _GO_DURATION_PART.finditer(text):
            if match.start() != pos:
                break
            total += Decimal(match.group(1)) * _GO_DURATION_UNIT[match.group(2)]
            pos = match.end()
        else:
            if pos == len(text) and pos > 0:
                return sign * float(total)
    raise MalformedPayloadError(f"{where}: {value!r} is not a Go duration such as '1h2m3s'")


def parse_go_time(value: object, where: str = "time") -> datetime | None:
    """A timezone-aware datetime from Go's RFC 3339 time; None for absent or Go's zero time."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise MalformedPayloadError(f"{where}: expected an RFC 3339 time, got {value!r}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise MalformedPayloadError(f"{where}: {value!r} is not an RFC 3339 time") from None
    if parsed.year <= 1:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def parse_go_bool(value: object, where: str = "flag") -> bool:
    """A boolean PD may write as true or, with `json:",string"`, as "true"."""
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return value == "true"
    raise MalformedPayloadError(f"{where}: expected a boolean, got {value!r}")


def obj(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise MalformedPayloadError(f"{where}: expected a JSON object, got {_kind(value)}")
    return value


def arr(value: object, where: str) -> Sequence[Any]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise MalformedPayloadError(f"{where}: expected a JSON array, got {_kind(value)}")
    return value


def uint(data: Mapping[str, Any], key: str, where: str, default: int = 0) -> int:
    """An integer field (Go omits zeros with omitempty); bools and floats are refused."""
    value = data.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise MalformedPayloadError(f"{where}.{key}: expected an integer, got {value!r}")
    return value


def num(data: Mapping[str, Any], key: str, where: str, default: float = 0.0) -> float:
    value = data.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise MalformedPayloadError(f"{where}.{key}: expected a number, got {value!r}")
    return float(value)


def text(data: Mapping[str, Any], key: str, where: str, default: str = "") -> str:
    value = data.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise MalformedPayloadError(f"{where}.{key}: expected a string, got {value!r}")
    return value


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return "a string" if isinstance(value, str) else repr(value)


# ------------------------------------------------------------------------ members


@dataclass(frozen=True, slots=True)
class PDMember:
    """One PD server as pdpb.Member (server/api/member.go)."""

    name: str
    member_id: int
    client_urls: tuple[str, ...]
    peer_urls: tuple[str, ...]
    binary_version: str = ""
    git_hash: str = ""
    deploy_path: str = ""
    leader_priority: int = 0

    @classmethod
    def from_json(cls, raw: object, where: str = "member") -> PDMember:
        data = obj(raw, where)
        return cls(
            name=text(data, "name", where),
            member_id=uint(data, "member_id", where),
            client_urls=tuple(str(u) for u in arr(data.get("client_urls"), f"{where}.client_urls")),
            peer_urls=tuple(str(u) for u in arr(data.get("peer_urls"), f"{where}.peer_urls")),
            binary_version=text(data, "binary_version", where),
            git_hash=text(data, "git_hash", where),
            deploy_path=text(data, "deploy_path", where),
            leader_priority=uint(data, "leader_priority", where),
        )


@dataclass(frozen=True, slots=True)
class Members:
    """pdpb.GetMembersResponse as GET /pd/api/v1/members writes it."""

    cluster_id: int
    members: tuple[PDMember, ...]
    leader: PDMember | None
    etcd_leader: PDMember | None

    @classmethod
    def from_json(cls, raw: object) -> Members:
        data = obj(raw, "members response")
        header = obj(data.get("header") or {}, "header")
        leader = data.get("leader")
        etcd_leader = data.get("etcd_leader")
        return cls(
            cluster_id=uint(header, "cluster_id", "header"),
            members=tuple(
                PDMember.from_json(m, f"members[{i}]")
                for i, m in enumerate(arr(data.get("members"), "members"))
            ),
            leader=PDMember.from_json(leader, "leader") if leader else None,
            etcd_leader=PDMember.from_json(etcd_leader, "etcd_leader") if etcd_leader else None,
        )


@dataclass(frozen=True, slots=True)
class MemberHealth:
    """One entry of GET /pd/api/v1/health (server/api/health.go `Health`)."""

    name: str
    member_id: int
    client_urls: tuple[str, ...]
    healthy: bool

    @classmethod
    def from_json(cls, raw: object, where: str) -> MemberHealth:
        data = obj(raw, where)
        healthy = data.get("health")
        if not isinstance(healthy, bool):
            raise MalformedPayloadError(f"{where}.health: expected a boolean, got {healthy!r}")
        return cls(
            name=text(data, "name", where),
            member_id=uint(data, "member_id", where),
            client_urls=tuple(str(u) for u in arr(data.get("client_urls"), f"{where}.client_urls")),
            healthy=healthy,
        )


# ------------------------------------------------------------------------- stores


@dataclass(frozen=True, slots=True)
class Store:
    """A TiKV store as PD's StoreInfo (server/api/store.go, pkg/response/store.go since v8.5).

    `state_name` is PD's verdict: Up, Disconnected (no heartbeat for 20 s), Down (no
    heartbeat for max-store-down-time), Offline or Tombstone; `node_state` is the newer
    Preparing/Serving/Removing/Removed. Sizes come from strings and keep their 4 digits.
    """

    id: int
    address: str
    status_address: str
    version: str
    state_name: str
    state: str
    node_state: str
    labels: Mapping[str, str]
    capacity_bytes: int | None
    available_bytes: int | None
    used_bytes: int | None
    leader_count: int
    region_count: int
    leader_weight: float
    region_weight: float
    leader_score: float
    region_score: float
    leader_size_mib: int
    region_size_mib: int
    pending_peer_count: int = 0
    slow_score: int = 0
    is_busy: bool = False
    sending_snap_count: int = 0
    receiving_snap_count: int = 0
    start_ts: datetime | None = None
    last_heartbeat: datetime | None = None
    uptime_s: float | None = None
    pause_leader_transfer_in: bool = False
    pause_leader_transfer_out: bool = False

    @property
    def available_ratio(self) -> float | None:
        """Available over capacity, as PD's low-space check reads it."""
        if not self.capacity_bytes or self.available_bytes is None:
            return None
        return self.available_bytes / self.capacity_bytes

    def heartbeat_age_s(self, now: datetime) -> float | None:
        """Seconds since the store's last heartbeat, measured against `now`."""
        if self.last_heartbeat is None:
            return None
        return (now - self.last_heartbeat).total_seconds()

    @classmethod
    def from_json(cls, raw: object, where: str = "store") -> Store:
        info = obj(raw, where)
        meta = obj(info.get("store"), f"{where}.store")
        status = obj(info.get("status") or {}, f"{where}.status")
        w, s = f"{where}.store", f"{where}.status"
        state = STORE_STATES.get(uint(meta, "state", w), f"state {meta.get('state')}")
        node_state = NODE_STATES.get(uint(meta, "node_state", w), f"node {meta.get('node_state')}")
        labels = {
            text(obj(lb, f"{w}.labels"), "key", w): text(obj(lb, f"{w}.labels"), "value", w)
            for lb in arr(meta.get("labels"), f"{w}.labels")
        }
        last_heartbeat = parse_go_time(status.get("last_heartbeat_ts"), f"{s}.last_heartbeat_ts")
        if last_heartbeat is None and uint(meta, "last_heartbeat", w):
            # metapb.Store.last_heartbeat: Unix nanoseconds, exact as an int.
            ns = uint(meta, "last_heartbeat", w)
            last_heartbeat = datetime.fromtimestamp(ns // 1_000_000_000, UTC).replace(
                microsecond=(ns % 1_000_000_000) // 1000
            )
        return cls(
            id=uint(meta, "id", w),
            address=text(meta, "address", w),
            status_address=text(meta, "status_address", w),
            version=text(meta, "version", w),
            state_name=text(meta, "state_name", w) or state,
            state=state,
            node_state=node_state,
            labels=labels,
            capacity_bytes=parse_byte_size(status.get("capacity"), f"{s}.capacity"),
            available_bytes=parse_byte_size(status.get("available"), f"{s}.available"),
            used_bytes=parse_byte_size(status.get("used_size"), f"{s}.used_size"),
            leader_count=uint(status, "leader_count", s),
            region_count=uint(status, "region_count", s),
            leader_weight=num(status, "leader_weight", s),
            region_weight=num(status, "region_weight", s),
            leader_score=num(status, "leader_score", s),
            region_score=num(status, "region_score", s),
            leader_size_mib=uint(status, "leader_size", s),
            region_size_mib=uint(status, "region_size", s),
            pending_peer_count=uint(status, "pending_peer_count", s),
            slow_score=uint(status, "slow_score", s),
            is_busy=bool(status.get("is_busy", False)),
            sending_snap_count=uint(status, "sending_snap_count", s),
            receiving_snap_count=uint(status, "receiving_snap_count", s),
            start_ts=parse_go_time(status.get("start_ts"), f"{s}.start_ts"),
            last_heartbeat=last_heartbeat,
            uptime_s=parse_go_duration(status.get("uptime"), f"{s}.uptime"),
            pause_leader_transfer_in=bool(status.get("pause_leader_transfer_in", False)),
            pause_leader_transfer_out=bool(status.get("pause_leader_transfer_out", False)),
        )


def stores_from_json(raw: object) -> tuple[Store, ...]:
    """GET /pd/api/v1/stores: {"count": N, "stores": [StoreInfo...]}."""
    data = obj(raw, "stores response")
    stores = tuple(
        Store.from_json(s, f"stores[{i}]") for i, s in enumerate(arr(data.get("stores"), "stores"))
    )
    count = uint(data, "count", "stores response", len(stores))
    if count != len(stores):
        raise MalformedPayloadError(f"stores response: count {count} but {len(stores)} stores")
    return stores


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


@dataclass(frozen=True, slots=True)
class ReplicationConfig:
    """GET /pd/api/v1/config/replicate; PD writes its booleans as strings, labels as "a,b"."""

    max_replicas: int
    location_labels: tuple[str, ...]
    enable_placement_rules: bool
    isolation_level: str

    @classmethod
    def from_json(cls, raw: object) -> ReplicationConfig:
        data = obj(raw, "replication config")
        labels = data.get("location-labels", "")
        if isinstance(labels, list):
            parsed = tuple(str(x) for x in labels)
        elif isinstance(labels, str):
            parsed = tuple(x for x in labels.split(",") if x)
        else:
            raise MalformedPayloadError(f"replication config.location-labels: {labels!r}")
        return cls(
            max_replicas=uint(data, "max-replicas", "replication config"),
            location_labels=parsed,
            enable_placement_rules=parse_go_bool(
                data.get("enable-placement-rules", "false"), "enable-placement-rules"
            ),
            isolation_level=text(data, "isolation-level", "replication config"),
        )
