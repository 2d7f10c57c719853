"""The PD client against PD's wire format, release by release (v7.5.0, v7.5.7, v8.5.7, v26.3.4).

PD cannot run here: the server is tests/subjects/tikv/pd_server.py, a double answering
with payloads written from each release's handlers (see payloads/README.md).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from operator_console.lab.ports import free_port
from operator_console.subjects.tikv.pd import PDClient
from operator_console.subjects.tikv.pd_errors import (
    PDHTTPError,
    PDResponseError,
    RegionNotFoundError,
    StoreNotFoundError,
)
from tests.subjects.tikv.conftest import RELEASES
from tests.subjects.tikv.pd_server import PDDouble

Start = Callable[..., PDDouble]
BIG_MEMBER_ID = 16312960531187329114  # pd-2's id, beyond 2**53


@pytest.mark.parametrize("release", RELEASES)
async def test_members_and_leader_keep_uint64_ids_exact(pd_doubles: Start, release: str) -> None:
    pd = pd_doubles(release=release)
    async with PDClient(pd.url) as client:
        members = await client.members()
        leader = await client.leader()
    assert members.cluster_id == 7381573483094745213
    assert [m.member_id for m in members.members] == [
        3474484975246189105,
        10847498327590186210,
        BIG_MEMBER_ID,
    ]
    assert float(BIG_MEMBER_ID) != BIG_MEMBER_ID  # a float would have changed it
    assert members.leader is not None and members.leader.name == "pd-0"
    assert leader.name == "pd-0" and leader.client_urls == ("http://pd-0:2379",)
    assert leader.binary_version == release
    assert members.members[2].peer_urls == ("http://pd-2:2380",)


@pytest.mark.parametrize("release", RELEASES)
async def test_health_shows_the_down_member_unhealthy(pd_doubles: Start, release: str) -> None:
    pd = pd_doubles(release=release, situation="pd-member-down")
    async with PDClient(pd.url) as client:
        health = await client.health()
        members = await client.members()
    assert {h.name: h.healthy for h in health} == {"pd-0": True, "pd-1": True, "pd-2": False}
    assert health[2].member_id == BIG_MEMBER_ID
    assert len(members.members) == 3  # PD still lists a member that is down


@pytest.mark.parametrize("release", RELEASES)
async def test_stores_decode_sizes_counts_and_heartbeats(pd_doubles: Start, release: str) -> None:
    pd = pd_doubles(release=release)
    async with PDClient(pd.url) as client:
        stores = await client.stores()
        pd_time = client.server_time
    assert [s.id for s in stores] == [1, 4, 5]
    store = stores[0]
    assert store.state_name == "Up" and store.state == "Up" and store.node_state == "Serving"
    assert store.address == "tikv-0:20160" and store.status_address == "tikv-0:20180"
    assert store.labels == {"host": "tikv-0"}
    assert store.capacity_bytes == 2**40  # "1TiB"
    # "612.3GiB": PD keeps four significant digits of the 612.29 GiB TiKV reported.
    assert store.available_bytes == int(612.3 * 2**30)
    assert store.used_bytes == 380 * 2**30
    assert (store.leader_count, store.region_count) == (16, 48)
    assert store.leader_weight == 1.0 and isinstance(store.leader_weight, float)
    assert store.last_heartbeat is not None and store.last_heartbeat.utcoffset() == timedelta(
        hours=8
    )
    assert pd_time is not None
    age = store.heartbeat_age_s(pd_time)
    assert age is not None and 6.0 < age < 8.5  # 7.4 s before PD's Date (whole seconds)
    assert store.uptime_s is not None and store.uptime_s == pytest.approx(274312.705666391)
    assert store.start_ts is not None and store.start_ts.tzinfo is not None


@pytest.mark.parametrize(
    ("situation", "state", "age_s"),
    [("store-disconnected", "Disconnected", 30.5), ("store-down", "Down", 35 * 60 + 12.1)],
)
@pytest.mark.parametrize("release", ["v7.5.7", "v8.5.7"])
async def test_a_silent_store_is_disconnected_then_down(
    pd_doubles: Start, release: str, situation: str, state: str, age_s: float
) -> None:
    pd = pd_doubles(release=release, situation=situation)
    async with PDClient(pd.url) as client:
        stores = {s.id: s for s in await client.stores()}
        now = client.server_time
    assert now is not None
    assert stores[5].state_name == state
    assert stores[5].state == "Up"  # PD's stored state is still Up; the name is its verdict
    assert stores[5].heartbeat_age_s(now) == pytest.approx(age_s, abs=1.0)
    assert stores[5].leader_count == 0  # leaders were re-elected on the other stores
    assert {s.state_name for i, s in stores.items() if i != 5} == {"Up"}


async def test_a_store_at_85_percent_disk_shows_15_percent_available(pd_doubles: Start) -> None:
    pd = pd_doubles(situation="store-disk-85")
    async with PDClient(pd.url) as client:
        store = await client.store(4)
    assert store.available_ratio == pytest.approx(0.15, rel=1e-3)
    assert store.state_name == "Up"


@pytest.mark.parametrize("release", RELEASES)
async def test_an_unknown_store_is_a_typed_error_with_pds_text(
    pd_doubles: Start, release: str
) -> None:
    pd = pd_doubles(release=release)
    async with PDClient(pd.url) as client:
        with pytest.raises(StoreNotFoundError) as caught:
            await client.store(7)
    error = caught.value
    assert error.status == 404 and error.code == "PD:core:ErrStoreNotFound"
    assert error.endpoint == "GET /pd/api/v1/store/7"
    assert str(error) == (
        "PD GET /pd/api/v1/store/7: unknown store (HTTP 404):"
        " [PD:core:ErrStoreNotFound]store 7 not found"
    )


@pytest.mark.parametrize("release", RELEASES)
async def test_region_stats_map_store_ids_to_counts(pd_doubles: Start, release: str) -> None:
    pd = pd_doubles(release=release, situation="store-down")
    async with PDClient(pd.url) as client:
        stats = await client.region_stats()
    assert stats.count == 48 and stats.empty_count == 0
    assert stats.store_leader_count == {1: 24, 4: 24}  # no leader on the down store
    assert stats.store_peer_count == {1: 48, 4: 48, 5: 45}
    assert stats.storage_size_mib == sum(stats.store_leader_size_mib.values())
    request = pd.requests_to("GET", "/pd/api/v1/stats/region")[0]
    assert request.query == {"start_key": "", "end_key": ""}


@pytest.mark.parametrize("release", RELEASES)
async def test_region_checks_count_and_sample_what_pd_lists(
    pd_doubles: Start, release: str
) -> None:
    pd = pd_doubles(release=release, situation="store-down")
    async with PDClient(pd.url) as client:
        miss = await client.region_check("miss-peer")
        down = await client.region_check("down-peer", sample=3)
        pending = await client.region_check("pending-peer")
        offline = await client.region_check("offline-peer")
        listed = await client.region_check_list("down-peer")
    assert (miss.count, down.count, pending.count, offline.count) == (3, 45, 20, 0)
    assert miss.sample_ids == (2, 6, 10)
    assert all(len(r.peer_store_ids) == 2 and 5 not in r.peer_store_ids for r in miss.sample)
    assert len(down.sample) == 3 and down.down_peers_by_store == {5: 45}
    assert pending.pending_peers_by_store == {5: 20}
    assert len(listed) == 45
    assert all(r.down_peers[0][0].store_id == 5 and r.down_peers[0][1] == 2112 for r in listed)
    assert {r.id for r in listed[:3]} == set(down.sample_ids)


async def test_region_checks_of_a_healthy_cluster_are_empty(pd_doubles: Start) -> None:
    pd = pd_doubles()
    async with PDClient(pd.url) as client:
        for kind in ("miss-peer", "down-peer", "pending-peer", "offline-peer", "extra-peer"):
            check = await client.region_check(kind)
            assert (check.count, check.sample) == (0, ())
        with pytest.raises(ValueError, match="unknown region check"):
            await client.region_check("no-such-check")


WIRE_FORM = {  # how each release writes GET /region/id/{id}
    "v7.5.0": ("application/json; charset=UTF-8", True),
    "v7.5.7": ("application/octet-stream", False),
    "v8.5.7": ("application/octet-stream", False),
    "v26.3.4": ("application/octet-stream", False),
}


@pytest.mark.parametrize("release", RELEASES)
async def test_a_region_reads_the_same_whether_indented_json_or_compact_octet_stream(
    pd_doubles: Start, release: str
) -> None:
    pd = pd_doubles(release=release, situation="store-down")
    async with httpx.AsyncClient(verify=False) as plain:
        raw = await plain.get(pd.url + "/pd/api/v1/region/id/18")
    content_type, indented = WIRE_FORM[release]
    assert raw.headers["content-type"] == content_type
    assert (b"\n  " in raw.content) is indented
    async with PDClient(pd.url) as client:
        region = await client.region(18)
    assert region.id == 18 and region.store_ids == (1, 4, 5)
    assert region.leader is not None and region.leader.store_id == 4
    assert region.down_peers[0][0].store_id == 5 and region.down_peers[0][1] == 2112
    assert [p.store_id for p in region.pending_peers] == [5]
    assert region.start_key == "7480000000000000FF6A5F728000000000FF009C400000000000FA"
    assert (region.conf_ver, region.version, region.approximate_size_mib) == (5, 31, 108)


MISSING_REGION = {  # what each release answers for a region it does not have
    "v7.5.0": (200, "null\n"),
    "v7.5.7": (200, '{"id":0,'),
    "v8.5.7": (200, '{"id":0,'),
    "v26.3.4": (404, '"[PD:region:ErrRegionNotFound]region 999999 not found"\n'),
}


@pytest.mark.parametrize("release", RELEASES)
async def test_a_missing_region_raises_region_not_found_in_every_release(
    pd_doubles: Start, release: str
) -> None:
    pd = pd_doubles(release=release)
    async with httpx.AsyncClient(verify=False) as plain:
        raw = await plain.get(pd.url + "/pd/api/v1/region/id/999999")
    status, start = MISSING_REGION[release]
    assert raw.status_code == status and raw.text.startswith(start)
    async with PDClient(pd.url) as client:
        with pytest.raises(RegionNotFoundError, match="999999") as caught:
            await client.region(999999)
    assert caught.value.endpoint == "GET /pd/api/v1/region/id/999999"


@pytest.mark.parametrize("release", RELEASES)
async def test_scan_regions_pages_by_raw_end_key(pd_doubles: Start, release: str) -> None:
    pd = pd_doubles(release=release)
    async with PDClient(pd.url) as client:
        regions = [r async for r in client.scan_regions(page_size=16)]
    assert [r.id for r in regions] == [2 + 4 * i for i in range(48)]
    pages = pd.requests_to("GET", "/pd/api/v1/regions/key")
    assert len(pages) == 3
    assert [p.query["limit"] for p in pages] == ["16", "16", "16"]
    assert pages[0].query["key"] == ""
    # The next page starts at the raw bytes of the last region's end key (hex in JSON),
    # percent-encoded byte for byte: PD v7.5 has no `format=hex`.
    assert pages[1].query["key"].encode("latin-1") == bytes.fromhex(regions[15].end_key)
    assert "key=t%80%00%00%00%00%00%00%FFj_r%80" in pages[1].raw_query
    assert "format" not in pages[1].query
    assert regions[-1].end_key == ""


@pytest.mark.parametrize("release", RELEASES)
async def test_operators_schedulers_and_config_decode(pd_doubles: Start, release: str) -> None:
    pd = pd_doubles(release=release, situation="store-down")
    async with PDClient(pd.url) as client:
        operators = await client.operators()
        schedulers = await client.schedulers()
        evicted = await client.evict_leader_stores()
        status = await client.operator_status(18)
        replication = await client.replication_config()
        schedule = await client.schedule_config()
        config = await client.config()
        version = await client.version()
    assert len(operators) == 1
    op = operators[0]
    assert (op.desc, op.brief, op.kinds) == (
        "admin-remove-peer",
        "rm peer: store [5]",
        ("admin", "region"),
    )
    assert (op.region_id, op.region_version, op.region_conf_ver) == (18, 31, 5)
    assert op.steps == ("remove peer on store 5",) and op.timeout == "6m0s"
    assert not op.finished and not op.timed_out
    assert "balance-leader-scheduler" in schedulers and "balance-region-scheduler" in schedulers
    assert evicted == ()
    assert status.startswith("status: RUNNING, operator: admin-remove-peer")
    assert replication.max_replicas == 3 and replication.location_labels == ("host",)
    assert replication.enable_placement_rules is True
    assert schedule["max-store-down-time"] == "30m0s"
    assert config["replication"]["max-replicas"] == 3
    assert version == release


async def test_evict_leader_stores_come_from_the_schedulers_config(pd_doubles: Start) -> None:
    for release in ("v7.5.7", "v8.5.7", "v26.3.4"):
        pd = pd_doubles(release=release, situation="leaders-evicted")
        async with PDClient(pd.url) as client:
            assert await client.evict_leader_stores() == (5,)
            assert "evict-leader-scheduler" in await client.schedulers()
            store = await client.store(5)
        assert store.leader_count == 0
        assert store.pause_leader_transfer_out is (release == "v26.3.4")


async def test_a_route_pd_lacks_is_an_http_error_with_gorillas_text(pd_doubles: Start) -> None:
    pd = pd_doubles(situation="pd-member-down")
    async with PDClient(pd.url) as client:
        with pytest.raises(PDHTTPError, match="404 page not found") as caught:
            await client.region(999998)
    assert caught.value.status == 404


class _WebPage(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<html><body>Grafana</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return


async def test_an_endpoint_that_is_not_pd_is_named_with_the_fix() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _WebPage)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
    )
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        async with PDClient(url) as client:
            with pytest.raises(PDResponseError) as caught:
                await client.stores()
    finally:
        server.shutdown()
        server.server_close()
    assert str(caught.value) == (
        "PD GET /pd/api/v1/stores: the answer is not JSON (starts"
        " '<html><body>Grafana</body></html>'); is this a PD client URL?"
    )
