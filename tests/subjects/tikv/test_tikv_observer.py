"""The tikv observer and its invariants on each recorded cluster situation, PD release by
release; PD that does not answer, followers, and drains.

PD cannot run here: the servers are the wire-format doubles of pd_server.py, answering
with the payloads PD v7.5.0 to v26.3.4 write (tests/subjects/tikv/payloads).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from operator_console.contract import Deployment
from operator_console.domain import Observation, SourceState
from operator_console.lab.ports import free_port
from operator_console.subjects.tikv import TikvKind
from operator_console.subjects.tikv.invariants import StoreOfflineStuck
from operator_console.subjects.tikv.observer import TikvObserver
from operator_console.subjects.tikv.spec import ThresholdSpec
from operator_console.subjects.tikv.state import TikvState
from tests.subjects.tikv.conftest import RELEASES
from tests.subjects.tikv.pd_server import PDDouble

Start = Callable[..., PDDouble]

EXPECTED = {
    "healthy": set(),
    "store-disconnected": {"store_disconnected:store-5"},
    "store-down": {"store_down:store-5", "regions_miss_peer:regions"},
    "pd-member-down": {"pd_member_unhealthy:pd-2"},
    "store-disk-85": {"store_disk_low:store-4"},
    "slow-store": {"leader_imbalance:store-5"},
    "slow-store-draining": {"leader_imbalance:store-5"},
    "leaders-evicted": set(),
    "store-disk-full": {"store_disconnected:store-5"},
    "store-offline": {"store_offline_stuck:store-5"},
    "store-recovering": {
        "regions_down_peer:store-5",
        "regions_pending_peer:store-5",
        "leader_imbalance:store-5",
    },
}


def attach(endpoints: dict[str, Any]) -> Deployment:
    return TikvKind().attach(endpoints, None, lambda _sample: None)  # type: ignore[arg-type]


def violations(deployment: Deployment, observation: Observation) -> set[str]:
    return {v.dedup_key for inv in deployment.subject.invariants for v in inv.check(observation)}


@pytest.mark.parametrize("release", RELEASES)
async def test_each_situation_breaks_exactly_its_invariants(
    pd_doubles: Start, release: str
) -> None:
    pd = pd_doubles(release=release)
    pd.advertise({"pd-0": pd.url})
    deployment = attach({"pd": pd.url})
    try:
        for situation, expected in EXPECTED.items():
            pd.set_situation(situation)
            observation = await deployment.subject.observe()
            assert observation.all_sources_ok, observation.failed_sources
            assert violations(deployment, observation) == expected, situation
    finally:
        await deployment.subject.close()
    assert not pd.requests_to("GET", "/pd/api/v1/regions")  # never the whole region list


async def test_the_observation_reads_pd_as_an_operator_would(pd_doubles: Start) -> None:
    pd = pd_doubles(situation="store-down")
    pd.advertise({"pd-0": pd.url})
    deployment = attach({"pd": pd.url})
    try:
        state = (await deployment.subject.observe()).state
        panel = deployment.subject.panel(await deployment.subject.observe())
    finally:
        await deployment.subject.close()
    assert isinstance(state, TikvState)
    assert (state.leader, state.answered_member, state.answered_role) == ("pd-0", "pd-0", "leader")
    down = state.stores["store-5"]
    assert down.state_name == "Down" and down.down_peers == 45 and down.pending_peers == 20
    assert down.heartbeat_age_s == pytest.approx(35 * 60 + 12, abs=1.5)
    assert state.config.max_replicas == 3 and state.config.max_store_down_time_s == 1800
    assert state.check_count("miss-peer") == 3 and state.region_count == 48
    rows = {row.target: row for row in panel.rows}
    assert list(rows) == ["pd-0", "pd-1", "pd-2", "store-1", "store-4", "store-5"]
    assert rows["pd-0"].role == "pd leader" and rows["pd-1"].role == "pd"
    assert rows["pd-0"].state == "healthy" and "answers the console" in rows["pd-0"].cells["notes"]
    store5 = rows["store-5"]
    assert (store5.state, store5.tone) == ("Down", "error")
    assert store5.health == "heartbeat 35 min ago"
    assert store5.cells["leaders"] == "0" and store5.cells["regions"] == "45"
    assert store5.cells["disk"] == "380 GiB / 1 TiB, 60% free"
    assert rows["store-1"].cells["leaders"] == "24"


async def test_a_follower_answering_is_labelled_as_such(pd_doubles: Start) -> None:
    leader = pd_doubles("pd-0", situation="store-disconnected")
    follower = pd_doubles("pd-1", situation="store-disconnected")
    follower.follow(leader)
    urls = {"pd-0": leader.url, "pd-1": follower.url}
    leader.advertise(urls)
    follower.advertise(urls)
    deployment = attach({"pd": follower.url})
    try:
        observation = await deployment.subject.observe()
        panel = deployment.subject.panel(observation)
    finally:
        await deployment.subject.close()
    state = observation.state
    assert isinstance(state, TikvState)
    assert (state.answered_member, state.answered_role, state.leader) == (
        "pd-1",
        "follower",
        "pd-0",
    )
    assert "answered by pd-1, follower" in state.summary()
    assert (
        "answers the console (follower)" in {r.target: r for r in panel.rows}["pd-1"].cells["notes"]
    )
    assert violations(deployment, observation) == {"store_disconnected:store-5"}
    assert leader.requests_to("GET", "/pd/api/v1/stores")[0].headers["pd-redirector"] == "pd-1"


@pytest.mark.parametrize("release", ["v7.5.7", "v8.5.7"])
async def test_a_pd_without_a_leader_is_no_pd_leader_and_never_healthy(
    pd_doubles: Start, release: str
) -> None:
    electing = pd_doubles("pd-1", release=release)
    electing.follow(None)
    deployment = attach({"pd": electing.url})
    try:
        observation = await deployment.subject.observe()
    finally:
        await deployment.subject.close()
    assert not observation.sources["pd"].ok
    assert "no leader" in observation.sources["pd"].reason
    # A leaderless PD is one ticket, not one per part it cannot answer.
    assert violations(deployment, observation) == {"no_pd_leader:pd"}


async def test_a_pd_that_does_not_answer_is_a_failed_source_and_nothing_else() -> None:
    deployment = attach(
        {"pd": [f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"]}
    )
    try:
        observation = await deployment.subject.observe()
    finally:
        await deployment.subject.close()
    status = observation.sources["pd"]
    assert status.state is SourceState.ERROR and "cannot connect" in status.reason
    assert list(observation.sources) == ["pd"]
    assert violations(deployment, observation) == {"observation_failed:pd"}
    assert deployment.subject.panel(observation).rows == ()


async def test_one_dead_endpoint_of_several_is_passed_over(pd_doubles: Start) -> None:
    pd = pd_doubles()
    deployment = attach({"pd": [f"http://127.0.0.1:{free_port()}", pd.url]})
    try:
        observation = await deployment.subject.observe()
    finally:
        await deployment.subject.close()
    assert observation.all_sources_ok
    assert observation.state.answered_by == pd.url  # type: ignore[attr-defined]
    # The test double lists its members at pd-N:2379, not where it listens.
    assert observation.state.answered_role == "unknown"  # type: ignore[attr-defined]


async def test_a_part_pd_refuses_is_its_own_failed_source(pd_doubles: Start) -> None:
    pd = pd_doubles(situation="leaders-evicted")
    deployment = attach({"pd": pd.url})
    try:
        await deployment.subject.observe()
        pd.set_situation("healthy")  # the evict-leader config route is gone: 404 is ()
        observation = await deployment.subject.observe()
    finally:
        await deployment.subject.close()
    assert observation.sources["pd:schedulers"].ok
    assert observation.state.evict_leader_stores == []  # type: ignore[attr-defined]


async def test_a_drained_store_holds_until_its_last_leader_is_gone(pd_doubles: Start) -> None:
    pd = pd_doubles(situation="slow-store-draining")
    deployment = attach({"pd": pd.url})
    try:
        draining = await deployment.subject.observe()
        pd.set_situation("leaders-evicted")
        drained = await deployment.subject.observe()
    finally:
        await deployment.subject.close()
    (violation,) = [v for inv in deployment.subject.invariants for v in inv.check(draining)]
    assert violation.invariant == "leader_imbalance" and violation.details["evicted"] is True
    assert "still holds 4" in violation.message
    assert violations(deployment, drained) == set()
    row = {r.target: r for r in deployment.subject.panel(drained).rows}["store-5"]
    assert "leaders evicted" in row.cells["notes"] and row.cells["leaders"] == "0"


async def test_an_offline_store_that_sheds_nothing_is_stuck_after_the_threshold(
    pd_doubles: Start,
) -> None:
    pd = pd_doubles(situation="store-offline")
    now = [1000.0]
    invariant = StoreOfflineStuck(ThresholdSpec(offline_stuck_s=60), clock=lambda: now[0])
    deployment = attach({"pd": pd.url})
    observer = deployment.subject
    assert isinstance(observer, TikvObserver)
    try:
        observation = await observer.observe()
        # With room for its replicas (max-replicas 2), only time says it is stuck.
        observation.state.config.max_replicas = 2  # type: ignore[attr-defined]
        assert invariant.check(observation) == []
        now[0] += 59
        assert invariant.check(observation) == []
        now[0] += 2
        (stuck,) = invariant.check(observation)
        assert "held 48 regions for 61 s" in stuck.message
        observation.state.config.max_replicas = 3  # type: ignore[attr-defined]
        (no_room,) = invariant.check(observation)
        assert "only 2 other Up stores for max-replicas 3" in no_room.message
    finally:
        await observer.close()


async def test_the_sampler_without_prometheus_draws_regions_and_leaders(
    pd_doubles: Start,
) -> None:
    pd = pd_doubles(situation="slow-store")
    deployment = attach({"pd": pd.url})
    assert deployment.workload is not None
    try:
        assert [s.key for s in deployment.workload.series] == [
            "regions",
            "leaders_min",
            "leaders_max",
        ]
        sample = await deployment.workload.sample()  # type: ignore[attr-defined]
    finally:
        await deployment.subject.close()
    assert sample.values == {"regions": 48.0, "leaders_min": 4.0, "leaders_max": 22.0}
    assert sample.per_target["store-5"] == {"leaders": 4, "regions": 48, "state": "Up"}


async def test_the_store_slow_condition_holds_while_the_slow_score_is_high(
    pd_doubles: Start,
) -> None:
    pd = pd_doubles(situation="slow-store")
    deployment = attach({"pd": pd.url})
    try:
        slow = deployment.subject.condition(
            "store_slow", "store-5", await deployment.subject.observe()
        )
        pd.set_situation("leaders-evicted")
        settled = deployment.subject.condition(
            "store_slow", "store-5", await deployment.subject.observe()
        )
        other = deployment.subject.condition(
            "node_serving", "store-5", await deployment.subject.observe()
        )
    finally:
        await deployment.subject.close()
    assert slow is not None and slow.holds and "slow score 100" in slow.remains
    assert settled is not None and not settled.holds and "slow score is 1" in settled.remains
    assert other is None
