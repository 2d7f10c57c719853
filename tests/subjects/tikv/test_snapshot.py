"""observe_cluster reads each situation as an operator needs it, and never lists /regions.

PD cannot run here: the server is the wire-format double of PD v8.5.7 / v7.5.7
(pd_server.py), switched between situations at runtime as the cluster would change.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from operator_console.lab.ports import free_port
from operator_console.subjects.tikv.pd import PDClient
from operator_console.subjects.tikv.pd_errors import PDUnavailableError
from operator_console.subjects.tikv.snapshot import (
    OBSERVED_CHECKS,
    observe_cluster,
    regions_pointed_at,
)
from tests.subjects.tikv.pd_server import PDDouble

Start = Callable[..., PDDouble]


@pytest.mark.parametrize("release", ["v7.5.7", "v8.5.7"])
async def test_one_observation_follows_a_store_from_up_to_down(
    pd_doubles: Start, release: str
) -> None:
    pd = pd_doubles(release=release)
    async with PDClient(pd.url) as client:
        healthy = await observe_cluster(client)
        pd.set_situation("store-disconnected")
        disconnected = await observe_cluster(client)
        pd.set_situation("store-down")
        down = await observe_cluster(client)

    assert healthy.failures == {}
    assert healthy.cluster_id == 7381573483094745213
    assert healthy.leader is not None and healthy.leader.name == "pd-0"
    assert [s.state_name for s in healthy.stores] == ["Up", "Up", "Up"]
    assert healthy.check_counts == dict.fromkeys(OBSERVED_CHECKS, 0)
    assert healthy.region_stats is not None and healthy.region_stats.count == 48

    store = disconnected.store(5)
    assert store is not None and store.state_name == "Disconnected"
    assert disconnected.heartbeat_age_s(store) == pytest.approx(30.5, abs=1.0)
    assert disconnected.check_counts["down-peer"] == 0  # TiKV waits 10 min to report one

    assert [s.id for s in down.stores_in("Down")] == [5]
    assert down.check_counts == {
        "miss-peer": 3,
        "down-peer": 45,
        "pending-peer": 20,
        "offline-peer": 0,
    }
    assert down.checks["down-peer"].down_peers_by_store == {5: 45}
    assert down.checks["miss-peer"].sample_ids == (2, 6, 10)
    assert down.region_stats is not None and down.region_stats.store_leader_count == {1: 24, 4: 24}
    assert down.bytes_read > 0 and down.elapsed_s > 0
    # Never the full region list: only the checks, the stats and the stores.
    assert not [r for r in pd.requests if r.path == "/pd/api/v1/regions"]
    assert {r.path for r in pd.requests} == {
        "/pd/api/v1/members",
        "/pd/api/v1/health",
        "/pd/api/v1/stores",
        "/pd/api/v1/stats/region",
        *(f"/pd/api/v1/regions/check/{kind}" for kind in OBSERVED_CHECKS),
    }


async def test_a_down_pd_member_shows_in_health_not_as_a_failure(pd_doubles: Start) -> None:
    pd = pd_doubles(situation="pd-member-down")
    async with PDClient(pd.url) as client:
        snapshot = await observe_cluster(client)
    assert snapshot.unhealthy_members == ("pd-2",)
    assert [m.name for m in snapshot.members] == ["pd-0", "pd-1", "pd-2"]
    assert snapshot.failures == {}


async def test_parts_pd_cannot_answer_are_failures_not_a_crash(pd_doubles: Start) -> None:
    follower = pd_doubles("pd-1", release="v8.5.7")
    follower.follow(None)  # an election: only local paths (health) are answered
    async with PDClient(follower.url) as client:
        snapshot = await observe_cluster(client)
    assert len(snapshot.health) == 3
    assert snapshot.stores == () and snapshot.members == () and snapshot.leader is None
    assert set(snapshot.failures) == {
        "members",
        "stores",
        "region_stats",
        *(f"check:{k}" for k in OBSERVED_CHECKS),
    }
    assert "redirect finds no leader" in snapshot.failures["stores"]


async def test_pd_gone_entirely_raises_unavailable() -> None:
    async with PDClient(f"http://127.0.0.1:{free_port()}", timeout=1) as client:
        with pytest.raises(PDUnavailableError, match="cannot connect"):
            await observe_cluster(client)


async def test_only_regions_a_check_points_at_are_read_and_only_by_id(pd_doubles: Start) -> None:
    pd = pd_doubles(situation="store-down")
    async with PDClient(pd.url) as client:
        snapshot = await observe_cluster(client)
        pd.clear_requests()
        detail = await regions_pointed_at(client, snapshot, per_check=2)
    assert set(detail) == {"miss-peer", "down-peer", "pending-peer"}  # offline-peer is empty
    assert [r.id for r in detail["miss-peer"]] == [2, 6]
    assert all(len(r.peers) == 2 for r in detail["miss-peer"])
    assert [r.id for r in detail["down-peer"]] == [14, 18]
    assert detail["down-peer"][1].down_peers[0][0].store_id == 5
    assert [r.id for r in detail["pending-peer"]] == [18, 26]
    # Each region once, by id, however many checks list it.
    assert sorted(r.path for r in pd.requests) == sorted(
        f"/pd/api/v1/region/id/{i}" for i in (2, 6, 14, 18, 26)
    )
