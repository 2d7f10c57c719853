"""PD's answers for a situation, encoded as a given PD release's handlers encode them.

Each encoder names the handler and struct it follows; the release traits below are read
off `git show <tag>:<file>` of tikv/pd (and kvproto for metapb/pdpb field tags).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from tests.subjects.tikv.wire.cluster import (
    CLUSTER_ID,
    MEMBERS,
    RegionModel,
    Situation,
    StoreModel,
)
from tests.subjects.tikv.wire.gojson import (
    GoFloat,
    GoMap,
    byte_size,
    compact,
    go_duration,
    indented,
    rfc3339nano,
)


@dataclass(frozen=True)
class PDRelease:
    tag: str
    commit: str
    tikv_version: str
    tikv_git_hash: str
    # server/api/region.go GetRegionByID: "indented-null" (render.JSON of a nil *RegionInfo),
    # "compact-zero" (easyjson of an empty RegionInfo via render.Data), "compact-404".
    region_by_id: str
    store_pending_peer_count: bool  # pkg/response/store.go, v8.5+
    store_pause_leader_transfer: bool  # pkg/response/store.go, v26.3+
    stats_columnar: bool  # pkg/statistics/region.go user_columnar_storage_size, v26.3+
    region_kv_size: bool  # pkg/response/region_easyjson.go approximate_kv_size, v26.3+
    evict_batch: bool  # evict_leader.go evictLeaderSchedulerConfig.Batch, v8.5+
    default_schedulers: tuple[str, ...]
    # pkg/utils/apiutil/serverapi/middleware.go: what a follower's redirector writes.
    no_leader: tuple[int, str]
    not_leader: tuple[int, str]
    redirect_failed: tuple[int, str]
    local_only_paths: tuple[str, ...]


_V75_REDIRECT = {
    "no_leader": (503, "no leader"),
    "not_leader": (500, "redirect to not leader"),
    "redirect_failed": (500, "redirect failed"),
    "local_only_paths": (),
}
_V85_REDIRECT = {
    "no_leader": (503, "[PD:apiutil:ErrRedirectNoLeader]redirect finds no leader"),
    "not_leader": (500, "[PD:apiutil:ErrRedirectToNotLeader]redirect to not leader"),
    "redirect_failed": (500, "[PD:apiutil:ErrRedirect]redirect failed"),
    "local_only_paths": (
        "/pd/api/v1/admin/log",
        "/pd/api/v1/status",
        "/pd/api/v1/health",
        "/pd/api/v1/ping",
        "/pd/api/v1/version",
        "/pd/api/v1/debug/pprof",
    ),
}
_V75_SCHEDULERS = (
    "balance-hot-region-scheduler",
    "balance-leader-scheduler",
    "balance-region-scheduler",
)
_V85_SCHEDULERS = (
    "balance-hot-region-scheduler",
    "evict-slow-store-scheduler",
    "balance-leader-scheduler",
    "evict-stopping-store-scheduler",
    "balance-region-scheduler",
)

RELEASES = {
    r.tag: r
    for r in (
        PDRelease(
            "v7.5.0",
            "ef6ba8551e525a700546d6bdb7ad6766115209cc",
            "7.5.0",
            "bd8a0aabd08fd77687f788e0b45858ccd3516e4d",
            "indented-null",
            False,
            False,
            False,
            False,
            False,
            _V75_SCHEDULERS,
            **_V75_REDIRECT,
        ),  # type: ignore[arg-type]
        PDRelease(
            "v7.5.7",
            "48eca84b9e2fefe238f46cbb29ea795609e6a606",
            "7.5.7",
            "7f1d4fd723efd08203884203ae15cf28e5d421be",
            "compact-zero",
            False,
            False,
            False,
            False,
            False,
            _V75_SCHEDULERS,
            **_V75_REDIRECT,
        ),  # type: ignore[arg-type]
        PDRelease(
            "v8.5.7",
            "6dce4a68e3e93b523657bd05cba89a86d64de117",
            "8.5.7",
            "3f446cfa9eb1d5c653031d261e185911495d0359",
            "compact-zero",
            True,
            False,
            False,
            False,
            True,
            _V85_SCHEDULERS,
            **_V85_REDIRECT,
        ),  # type: ignore[arg-type]
        PDRelease(
            "v26.3.4",
            "054331030a4d46c5a5227555698606a258a932e4",
            "26.3.4",
            "",
            "compact-404",
            True,
            True,
            True,
            True,
            True,
            _V85_SCHEDULERS,
            **_V85_REDIRECT,
        ),  # type: ignore[arg-type]
    )
}

JSON_TYPE = "application/json; charset=UTF-8"  # unrolled/render ContentJSON + charset
DATA_TYPE = "application/octet-stream"  # render.Data (region bodies)
TEXT_TYPE = "text/plain; charset=utf-8"  # net/http.Error


@dataclass
class Exchange:
    method: str
    path: str
    status: int
    content_type: str
    body: str
    query: dict[str, str] | None = None
    match_json: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.method, "path": self.path}
        if self.query is not None:
            out["query"] = self.query
        if self.match_json is not None:
            out["match_json"] = self.match_json
        out.update(status=self.status, content_type=self.content_type, body=self.body)
        return out


def pd_error(text: str) -> str:
    """render.JSON(w, code, err.Error()): an indented JSON string and a newline."""
    return indented(text)


# ------------------------------------------------------------------------- stores


def _ns(moment_age: timedelta, situation: Situation) -> tuple[Any, int]:
    moment = situation.recorded_at - moment_age
    nanos = moment.microsecond * 1000 + 391
    return moment, nanos


def _store_counts(situation: Situation, store: StoreModel) -> dict[str, int]:
    leaders = [r for r in situation.regions if r.leader_store == store.id]
    peers = [r for r in situation.regions if r.peer_on(store.id) is not None]
    return {
        "leader_count": len(leaders),
        "leader_size": sum(r.size_mib for r in leaders),
        "region_count": len(peers),
        "region_size": sum(r.size_mib for r in peers),
    }


def store_info(situation: Situation, store: StoreModel, rel: PDRelease) -> dict[str, Any]:
    """server/api/store.go newStoreInfo (v7.5), pkg/response/store.go BuildStoreInfo (v8.5+)."""
    heartbeat, hb_nanos = _ns(store.heartbeat_age, situation)
    start = (situation.recorded_at - store.started_ago).replace(microsecond=0)
    hb_unix_ns = int(heartbeat.timestamp()) * 1_000_000_000 + hb_nanos
    counts = _store_counts(situation, store)
    meta: dict[str, Any] = {"id": store.id, "address": f"{store.name}:20160"}
    if store.state:  # metapb.StoreState_Up (0) is omitted by omitempty
        meta["state"] = store.state
    meta.update(
        {
            "labels": [{"key": "host", "value": store.name}],
            "version": rel.tikv_version,
            "peer_address": f"{store.name}:20160",
            "status_address": f"{store.name}:20180",
        }
    )
    if rel.tikv_git_hash:
        meta["git_hash"] = rel.tikv_git_hash
    meta.update(
        start_timestamp=int(start.timestamp()),
        deploy_path="/tidb-deploy/tikv-20160/bin",
        last_heartbeat=hb_unix_ns,
        node_state=store.node_state,  # metapb.NodeState_Serving (1), Removing (2)
        state_name=store.state_name,
    )
    ratio = store.available / store.capacity
    region_score = counts["region_size"] * (1.0 if ratio >= 0.2 else 41.73) + 13.0625 * store.id
    status: dict[str, Any] = {
        "capacity": byte_size(store.capacity),
        "available": byte_size(store.available),
        "used_size": byte_size(store.used),
        "leader_count": counts["leader_count"],
        "leader_weight": GoFloat(store.leader_weight),
        "leader_score": GoFloat(float(counts["leader_count"])),
        "leader_size": counts["leader_size"],
        "region_count": counts["region_count"],
        "region_weight": GoFloat(store.region_weight),
        "region_score": GoFloat(region_score),
        "region_size": counts["region_size"],
    }
    pending = sum(1 for r in situation.regions if store.id in r.pending)
    if rel.store_pending_peer_count and pending:
        status["pending_peer_count"] = pending
    status["slow_score"] = store.slow_score
    status["slow_trend"] = {
        "cause_value": GoFloat(250_000.0 + 1_337.5 * store.id),
        "cause_rate": GoFloat(0.0),
        "result_value": GoFloat(0.0 if store.state_name != "Up" else 912.0),
        "result_rate": GoFloat(0.0),
    }
    status["start_ts"] = rfc3339nano(start)
    status["last_heartbeat_ts"] = rfc3339nano(heartbeat, hb_nanos)
    uptime = Decimal(int(heartbeat.timestamp()) - int(start.timestamp())) + Decimal(hb_nanos) / (
        10**9
    )
    status["uptime"] = go_duration(uptime)
    if rel.store_pause_leader_transfer and store.pause_leader_transfer:
        status["pause_leader_transfer_out"] = True
    return {"store": meta, "status": status}


def stores(situation: Situation, rel: PDRelease) -> str:
    infos = [store_info(situation, s, rel) for s in situation.stores]
    return indented({"count": len(infos), "stores": infos})


# ------------------------------------------------------------------------ regions


def _hex(key: bytes) -> str:
    return key.hex().upper()  # core.HexRegionKeyStr


def _peer_easy(peer_id: int, store_id: int) -> dict[str, Any]:
    # easyjson's MetaPeer: role_name first, then the embedded metapb.Peer's non-zero fields.
    return {"role_name": "Voter", "id": peer_id, "store_id": store_id}


def _peer_std(peer_id: int, store_id: int) -> dict[str, Any]:
    # encoding/json's MetaPeer: the embedded *metapb.Peer's fields come first.
    return {"id": peer_id, "store_id": store_id, "role_name": "Voter"}


def _region_body(region: RegionModel, peer: Any, rel: PDRelease, std: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": region.id,
        "start_key": _hex(region.start_key),
        "end_key": _hex(region.end_key),
        "epoch": {"conf_ver": region.conf_ver, "version": region.version},
        "peers": [peer(pid, sid) for pid, sid in region.peers],
    }
    leader_peer = region.peer_on(region.leader_store) if region.leader_store else None
    out["leader"] = peer(leader_peer, region.leader_store) if leader_peer else {"role_name": ""}
    if region.down:
        downs = []
        for sid, secs in region.down:
            p = peer(region.peer_on(sid), sid)
            downs.append(
                {"down_seconds": secs, "peer": p} if std else {"peer": p, "down_seconds": secs}
            )
        out["down_peers"] = downs
    if region.pending:
        out["pending_peers"] = [peer(region.peer_on(sid), sid) for sid in region.pending]
    out.update(
        cpu_usage=0,
        written_bytes=region.written_bytes,
        read_bytes=region.read_bytes,
        written_keys=region.written_bytes // 128,
        read_keys=region.read_bytes // 128,
        approximate_size=region.size_mib,
        approximate_keys=region.keys,
    )
    if rel.region_kv_size:
        out.update(approximate_kv_size=region.size_mib - 4, approximate_columnar_kv_size=0)
    return out


def region_compact(region: RegionModel, rel: PDRelease) -> dict[str, Any]:
    """easyjson's RegionInfo (server/api/region_easyjson.go, pkg/response since v8.5)."""
    return _region_body(region, _peer_easy, rel, std=False)


def regions_list(regions: list[RegionModel], rel: PDRelease) -> str:
    """marshalRegionsInfoJSON: {"count":N,"regions":[...]} written by hand, compact."""
    return compact({"count": len(regions), "regions": [region_compact(r, rel) for r in regions]})


_ZERO_REGION = {
    "id": 0,
    "start_key": "",
    "end_key": "",
    "leader": {"role_name": ""},
    "cpu_usage": 0,
    "written_bytes": 0,
    "read_bytes": 0,
    "written_keys": 0,
    "read_keys": 0,
    "approximate_size": 0,
    "approximate_keys": 0,
}


def region_by_id(situation: Situation, region_id: int, rel: PDRelease) -> Exchange:
    path = f"/pd/api/v1/region/id/{region_id}"
    found = next((r for r in situation.regions if r.id == region_id), None)
    if rel.region_by_id == "indented-null":
        body = _region_body(found, _peer_std, rel, std=True) if found else None
        return Exchange("GET", path, 200, JSON_TYPE, indented(body))
    if found is not None:
        return Exchange("GET", path, 200, DATA_TYPE, compact(region_compact(found, rel)))
    if rel.region_by_id == "compact-zero":
        return Exchange("GET", path, 200, DATA_TYPE, compact(_ZERO_REGION))
    text = f"[PD:region:ErrRegionNotFound]region {region_id} not found"
    return Exchange("GET", path, 404, JSON_TYPE, pd_error(text))


def region_checks(situation: Situation) -> dict[str, list[RegionModel]]:
    """pkg/statistics/region_collection.go Observe, for max-replicas 3."""
    return {
        "miss-peer": [r for r in situation.regions if len(r.peers) < 3],
        "extra-peer": [r for r in situation.regions if len(r.peers) > 3],
        "down-peer": [r for r in situation.regions if r.down],
        "pending-peer": [r for r in situation.regions if r.pending],
        "offline-peer": [
            r
            for r in situation.regions
            if any(situation.store(sid).state == 1 for _, sid in r.peers)
        ],
    }


def region_stats(situation: Situation, rel: PDRelease) -> str:
    """statistics.RegionStats over every region (GetRegionStatsByRange, no hot stats)."""
    leader_count: GoMap = GoMap()
    leader_size: GoMap = GoMap()
    leader_keys: GoMap = GoMap()
    peer_count: GoMap = GoMap()
    peer_size: GoMap = GoMap()
    peer_keys: GoMap = GoMap()
    for r in situation.regions:
        if r.leader_store is not None:
            leader_count[r.leader_store] = leader_count.get(r.leader_store, 0) + 1
            leader_size[r.leader_store] = leader_size.get(r.leader_store, 0) + r.size_mib
            leader_keys[r.leader_store] = leader_keys.get(r.leader_store, 0) + r.keys
        for _, sid in r.peers:
            peer_count[sid] = peer_count.get(sid, 0) + 1
            peer_size[sid] = peer_size.get(sid, 0) + r.size_mib
            peer_keys[sid] = peer_keys.get(sid, 0) + r.keys
    out: dict[str, Any] = {
        "count": len(situation.regions),
        "empty_count": sum(1 for r in situation.regions if r.size_mib <= 1),
        "storage_size": sum(r.size_mib for r in situation.regions),
        "user_storage_size": sum(r.size_mib - 4 for r in situation.regions),
    }
    if rel.stats_columnar:
        out["user_columnar_storage_size"] = 0
    out.update(
        storage_keys=sum(r.keys for r in situation.regions),
        store_leader_count=leader_count,
        store_peer_count=peer_count,
        store_leader_size=leader_size,
        store_leader_keys=leader_keys,
        store_peer_size=peer_size,
        store_peer_keys=peer_keys,
    )
    return indented(out)


# ------------------------------------------------------------------------ members


def member(m: Any, rel: PDRelease) -> dict[str, Any]:
    """pdpb.Member via encoding/json (omitempty drops leader_priority 0 and dc_location)."""
    return {
        "name": m.name,
        "member_id": m.member_id,
        "peer_urls": [m.peer_url],
        "client_urls": [m.client_url],
        "deploy_path": "/tidb-deploy/pd-2379/bin",
        "binary_version": rel.tag,
        "git_hash": rel.commit,
    }


def members(situation: Situation, rel: PDRelease) -> str:
    """server/api/member.go GetMembers: pdpb.GetMembersResponse, indented."""
    leader = next(m for m in MEMBERS if m.name == situation.leader)
    return indented(
        {
            "header": {"cluster_id": CLUSTER_ID},
            "members": [member(m, rel) for m in MEMBERS],
            "leader": member(leader, rel),
            "etcd_leader": member(leader, rel),
        }
    )


def health(situation: Situation) -> str:
    """server/api/health.go GetHealthStatus: []Health."""
    return indented(
        [
            {
                "name": m.name,
                "member_id": m.member_id,
                "client_urls": [m.client_url],
                "health": m.name not in situation.down_members,
            }
            for m in MEMBERS
        ]
    )


# ---------------------------------------------------------------------- operators


def _go_time_string(moment: Any, nanos: int, mono_s: Decimal) -> str:
    # time.Time.String() with its monotonic reading, as operator.String() prints it.
    base = moment.strftime("%Y-%m-%d %H:%M:%S")
    return f"{base}.{nanos:09d} +0800 CST m=+{mono_s:.9f}"


def operator_string(situation: Situation, op: dict[str, Any]) -> str:
    """pkg/schedule/operator/operator.go (*Operator).String, its MarshalJSON."""
    region = situation.region(int(op["region"]))
    created = situation.recorded_at - timedelta(seconds=float(op["age_s"]))
    nanos = created.microsecond * 1000 + 517
    mono = Decimal("273601.104223317") - Decimal(str(op["age_s"]))
    started = created + timedelta(milliseconds=3)
    steps = ", ".join(f"{i}:{{{s}}}" for i, s in enumerate(op["steps"]))
    return (
        f"{op['desc']} {{{op['brief']}}} (kind:{op['kind']}, region:{region.id}"
        f"({region.version}, {region.conf_ver}), createAt:{_go_time_string(created, nanos, mono)}"
        f", startAt:{_go_time_string(started, nanos + 3_000_000, mono + Decimal('0.003'))}"
        f", currentStep:0, size:{region.size_mib}, steps:[{steps}], timeout:[{op['timeout']}])"
    )


def operators(situation: Situation) -> str:
    return indented([operator_string(situation, op) for op in situation.operators])


# ------------------------------------------------------------------------- config


def replication_config() -> dict[str, Any]:
    """pkg/schedule/config ReplicationConfig: `,string` booleans, StringSlice labels."""
    return {
        "max-replicas": 3,
        "location-labels": "host",
        "strictly-match-label": "false",
        "enable-placement-rules": "true",
        "enable-placement-rules-cache": "false",
        "isolation-level": "",
    }


def schedule_config() -> dict[str, Any]:
    """pkg/schedule/config ScheduleConfig, the fields an operator reads (defaults)."""
    return {
        "max-snapshot-count": 64,
        "max-pending-peer-count": 64,
        "max-merge-region-size": 20,
        "max-merge-region-keys": 200000,
        "split-merge-interval": "1h0m0s",
        "enable-one-way-merge": "false",
        "enable-cross-table-merge": "true",
        "patrol-region-interval": "10ms",
        "max-store-down-time": "30m0s",
        "max-store-preparing-time": "48h0m0s",
        "leader-schedule-limit": 4,
        "leader-schedule-policy": "count",
        "region-schedule-limit": 2048,
        "replica-schedule-limit": 64,
        "merge-schedule-limit": 8,
        "hot-region-schedule-limit": 4,
        "hot-region-cache-hits-threshold": 3,
        "tolerant-size-ratio": GoFloat(0.0),
        "low-space-ratio": GoFloat(0.8),
        "high-space-ratio": GoFloat(0.7),
        "region-score-formula-version": "v2",
        "scheduler-max-waiting-operator": 5,
        "enable-remove-down-replica": "true",
        "enable-replace-offline-replica": "true",
        "enable-make-up-replica": "true",
        "enable-remove-extra-replica": "true",
        "enable-location-replacement": "true",
    }


def config(rel: PDRelease) -> str:
    """server/api/config.go GetConfig: config.Config, the sections an operator reads."""
    return indented(
        {
            "client-urls": "http://0.0.0.0:2379",
            "peer-urls": "http://0.0.0.0:2380",
            "advertise-client-urls": "http://pd-0:2379",
            "advertise-peer-urls": "http://pd-0:2380",
            "name": "pd-0",
            "data-dir": "/tidb-data/pd-2379",
            "lease": 5,
            "log": {"level": "info", "format": "text"},
            "schedule": schedule_config(),
            "replication": replication_config(),
            "pd-server": {
                "use-region-storage": "true",
                "max-gap-reset-ts": "24h0m0s",
                "key-type": "table",
                "runtime-services": "",
                "metric-storage": "",
                "dashboard-address": "http://pd-0:2379",
                "flow-round-by-digit": 3,
                "min-resolved-ts-persistence-interval": "1s",
                "server-memory-limit": GoFloat(0.0),
            },
            "cluster-version": rel.tikv_version,
        }
    )
