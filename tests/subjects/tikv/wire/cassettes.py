"""Every exchange an operator's client has with PD in one situation, for one PD release.

An exchange with `match_json` answers only a request whose JSON body has those fields;
the first matching exchange wins, so refusals come before the plain success.
"""

from __future__ import annotations

from typing import Any

from tests.subjects.tikv.wire.cluster import MEMBERS, REMOVING_PEER_REGION, Situation
from tests.subjects.tikv.wire.gojson import compact, indented
from tests.subjects.tikv.wire.pd_wire import (
    JSON_TYPE,
    TEXT_TYPE,
    Exchange,
    PDRelease,
    config,
    health,
    member,
    members,
    operator_string,
    operators,
    pd_error,
    region_by_id,
    region_checks,
    region_stats,
    regions_list,
    replication_config,
    schedule_config,
    store_info,
    stores,
)

API = "/pd/api/v1"
UNKNOWN_STORE = 7
UNKNOWN_REGION = 999999
SCAN_PAGE = 16
NOT_FOUND_PAGE = "404 page not found\n"  # net/http's NotFound (gorilla mux, ServeMux)


def _json(method: str, path: str, body: Any, status: int = 200, **kw: Any) -> Exchange:
    return Exchange(method, path, status, JSON_TYPE, indented(body), **kw)


def _err(method: str, path: str, status: int, text: str, **kw: Any) -> Exchange:
    return Exchange(method, path, status, JSON_TYPE, pd_error(text), **kw)


def _store_not_found(store_id: int) -> str:
    return f"[PD:core:ErrStoreNotFound]store {store_id} not found"


def reads(s: Situation, rel: PDRelease) -> list[Exchange]:
    out = [
        _json("GET", f"{API}/version", {"version": rel.tag}),
        Exchange("GET", f"{API}/members", 200, JSON_TYPE, members(s, rel)),
        _json("GET", f"{API}/leader", _leader(s, rel)),
        Exchange("GET", f"{API}/health", 200, JSON_TYPE, health(s)),
        Exchange("GET", f"{API}/stores", 200, JSON_TYPE, stores(s, rel)),
    ]
    for store in s.stores:
        out.append(_json("GET", f"{API}/store/{store.id}", store_info(s, store, rel)))
    out.append(_err("GET", f"{API}/store/{UNKNOWN_STORE}", 404, _store_not_found(UNKNOWN_STORE)))
    out.append(Exchange("GET", f"{API}/stats/region", 200, JSON_TYPE, region_stats(s, rel)))
    for kind, listed in region_checks(s).items():
        out.append(
            Exchange(
                "GET",
                f"{API}/regions/check/{kind}",
                200,
                "application/octet-stream",
                regions_list(listed, rel),
            )
        )
    # The first regions, and those a check's sample (eight at most) would point at.
    pointed = {r.id for listed in region_checks(s).values() for r in listed[:8]}
    for region in s.regions:
        if region.id in pointed or region is s.regions[4] or region.id < s.regions[4].id:
            out.append(region_by_id(s, region.id, rel))
    out.append(region_by_id(s, UNKNOWN_REGION, rel))
    out.extend(_scan_pages(s, rel))
    return out


def _leader(s: Situation, rel: PDRelease) -> dict[str, Any]:
    return member(next(m for m in MEMBERS if m.name == s.leader), rel)


def _scan_pages(s: Situation, rel: PDRelease) -> list[Exchange]:
    """GET /regions/key?key=K&end_key=&limit=16 from the first key to the last region."""
    pages = []
    start = 0
    key = b""
    while start < len(s.regions):
        page = s.regions[start : start + SCAN_PAGE]
        query = {"key": key.decode("latin-1"), "end_key": "", "limit": str(SCAN_PAGE)}
        pages.append(
            Exchange(
                "GET",
                f"{API}/regions/key",
                200,
                "application/octet-stream",
                regions_list(page, rel),
                query=query,
            )
        )
        start += SCAN_PAGE
        key = page[-1].end_key
        if not key:
            break
    return pages


def schedulers(s: Situation, rel: PDRelease) -> list[Exchange]:
    names = list(rel.default_schedulers)
    if s.evict_leader_stores:
        names.append("evict-leader-scheduler")
    out = [_json("GET", f"{API}/schedulers", names)]
    list_path = f"{API}/scheduler-config/evict-leader-scheduler/list"
    if s.evict_leader_stores:
        conf: dict[str, Any] = {
            "store-id-ranges": {
                str(sid): [{"end-key": "", "start-key": ""}] for sid in s.evict_leader_stores
            }
        }
        if rel.evict_batch:
            conf["batch"] = 3
        out.append(_json("GET", list_path, conf))
    else:
        out.append(Exchange("GET", list_path, 404, TEXT_TYPE, NOT_FOUND_PAGE))
    evict = {"name": "evict-leader-scheduler"}
    out.append(
        _err(
            "POST",
            f"{API}/schedulers",
            500,
            _store_not_found(UNKNOWN_STORE),
            match_json={**evict, "store_id": UNKNOWN_STORE},
        )
    )
    for sid in s.evict_leader_stores:
        applied = "The scheduler has been applied to the store."
        out.append(
            _json("POST", f"{API}/schedulers", applied, match_json={**evict, "store_id": sid})
        )
    out.append(_json("POST", f"{API}/schedulers", "The scheduler is created."))
    for store in s.stores:
        # server/api/scheduler.go redirectSchedulerDelete: the config route's status, body null.
        status = 200 if store.id in s.evict_leader_stores else 404
        out.append(
            _json(
                "DELETE", f"{API}/schedulers/evict-leader-scheduler-{store.id}", None, status=status
            )
        )
    return out


def operator_exchanges(s: Situation, rel: PDRelease) -> list[Exchange]:
    path = f"{API}/operators"
    out = [
        Exchange("GET", path, 200, JSON_TYPE, operators(s)),
        _json("POST", path, "missing operator name", status=400, match_json={"name": None}),
    ]
    # pkg/schedule/handler/handler.go HandleOperatorCreation and the Add*Operator checks.
    out.append(
        _err(
            "POST",
            path,
            500,
            f"[PD:region:ErrRegionNotFound]region {UNKNOWN_REGION} not found",
            match_json={"region_id": UNKNOWN_REGION},
        )
    )
    out.append(
        _json(
            "POST",
            path,
            f"region has no voter in store {UNKNOWN_STORE}",
            status=500,
            match_json={"name": "transfer-leader", "to_store_id": UNKNOWN_STORE},
        )
    )
    out.append(
        _err(
            "POST",
            path,
            500,
            _store_not_found(UNKNOWN_STORE),
            match_json={"name": "transfer-peer", "to_store_id": UNKNOWN_STORE},
        )
    )
    for sid in sorted(s.store_ids_unhealthy):
        out.append(
            _err(
                "POST",
                path,
                500,
                f"[PD:core:ErrStoreUnhealthy]store {sid} is unhealthy",
                match_json={"name": "transfer-peer", "to_store_id": sid},
            )
        )
    for op in s.operators:
        # An admin operator is not replaced by another of the same priority.
        if "admin" in str(op["kind"]):
            out.append(
                _err(
                    "POST",
                    path,
                    500,
                    "[PD:operator:ErrAddOperator]failed to add operator, maybe already have one",
                    match_json={"region_id": op["region"]},
                )
            )
    out.append(_json("POST", path, "The operator is created."))
    for op in s.operators:
        region_id = op["region"]
        line = f"status: RUNNING, operator: {operator_string(s, op)}"
        out.append(_json("GET", f"{path}/{region_id}", line))
        out.append(_json("DELETE", f"{path}/{region_id}", "The pending operator is canceled."))
    not_found = "[PD:operator:ErrOperatorNotFound]operator not found"
    # Every region without an operator, as a read-back after an operator is created finds.
    for region_id in sorted({*(r.id for r in s.regions), REMOVING_PEER_REGION, UNKNOWN_REGION}):
        if not any(op["region"] == region_id for op in s.operators):
            out.append(_err("GET", f"{path}/{region_id}", 500, not_found))
            out.append(_err("DELETE", f"{path}/{region_id}", 500, not_found))
    return out


def config_exchanges(s: Situation, rel: PDRelease) -> list[Exchange]:
    out = [
        Exchange("GET", f"{API}/config", 200, JSON_TYPE, config(rel)),
        _json("GET", f"{API}/config/schedule", schedule_config()),
        _json("GET", f"{API}/config/replicate", replication_config()),
        _json(
            "POST",
            f"{API}/config",
            "config item no-such-item not found",
            status=400,
            match_json={"no-such-item": 1},
        ),
        _json("POST", f"{API}/config", "The config is updated."),
    ]
    for store in s.stores:
        out.append(_json("POST", f"{API}/store/{store.id}/weight", "The store's label is updated."))
    out.append(
        _err("POST", f"{API}/store/{UNKNOWN_STORE}/weight", 500, _store_not_found(UNKNOWN_STORE))
    )
    return out


def cassette(s: Situation, rel: PDRelease) -> dict[str, Any]:
    exchanges = [
        *reads(s, rel),
        *schedulers(s, rel),
        *operator_exchanges(s, rel),
        *config_exchanges(s, rel),
    ]
    return {
        "pd_version": rel.tag,
        "pd_commit": rel.commit,
        "written_from": "tikv/pd " + rel.tag + " source (server/api, pkg/response,"
        " pkg/schedule/handler, pkg/utils/apiutil): PD's encoders applied to"
        " the situation below; not captured from a running PD",
        "situation": s.name,
        "description": s.description,
        "recorded_at": s.recorded_at.isoformat(),
        "leader": s.leader,
        "down_members": sorted(s.down_members),
        "redirector": {
            "no_leader": {"status": rel.no_leader[0], "body": rel.no_leader[1] + "\n"},
            "not_leader": {"status": rel.not_leader[0], "body": rel.not_leader[1] + "\n"},
            "redirect_failed": {
                "status": rel.redirect_failed[0],
                "body": rel.redirect_failed[1] + "\n",
            },
            "local_only_paths": list(rel.local_only_paths),
        },
        "exchanges": [e.to_json() for e in exchanges],
    }


__all__ = ["cassette", "compact"]
