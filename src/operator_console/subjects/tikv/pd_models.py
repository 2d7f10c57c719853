"""Typed views of PD's HTTP payloads, decoded the way PD v7.5 to v26.3 encode them.

Each decoder names the PD source it follows. PD writes some numbers as strings
(`typeutil.ByteSize` as "1.5TiB", `typeutil.Duration` as "1h2m3s", schedule booleans
as "true"), protobuf enums as numbers, and uint64 ids beyond 2**53: ids are kept as
Python ints (never through float), sizes parsed with `Decimal`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
