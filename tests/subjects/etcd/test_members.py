"""The etcd subject on a real 3-member cluster, member and raft faults: each injected through the
lab's real mechanism, caught by its invariant, diagnosed by the rules brain from tool results
and, where an action exists, fixed by running it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from operator_console.domain import Observation
from operator_console.subjects.etcd.state import EtcdState
from tests.subjects.etcd.conftest import Etcd, deployed, recommended

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def etcd(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Etcd]:
    run_dir: Path = tmp_path_factory.mktemp("etcd-members")
    async for lab in deployed(run_dir, {"members": 3}, {"rate": 30}):
        yield lab
        # Whatever the tests did, no observation ever showed two leaders in one term.
        assert lab.split_leaders_seen() == []


@pytest_asyncio.fixture(autouse=True, loop_scope="module")
async def whole_afterwards(etcd: Etcd) -> AsyncIterator[None]:
    yield
    await etcd.restore()


def state(observation: Observation) -> EtcdState:
    assert isinstance(observation.state, EtcdState)
    return observation.state


async def run(etcd: Etcd, action: str, params: dict[str, object]) -> str:
    spec = etcd.kit.actions.get(action)
    return await spec.run(spec.validate(params))


async def test_a_healthy_cluster_breaks_no_invariant_and_its_panel_marks_the_leader(etcd: Etcd):
    leader = await etcd.leader()
    await asyncio.sleep(1.0)
    observation = await etcd.observe()
    assert observation.all_sources_ok, observation.failed_sources
    for invariant in etcd.deployment.subject.invariants:
        assert invariant.check(observation) == [], invariant.name
    view = etcd.deployment.subject.panel(observation)
    roles = {row.target: row.role for row in view.rows}
    assert roles[leader] == "★ leader"
    assert sorted(r for t, r in roles.items() if t != leader) == ["follower", "follower"]
    for row in view.rows:
        assert row.state == "up" and row.tone == "ok"
        assert int(row.cells["term"]) >= 2 and int(row.cells["index"]) > 0
        assert row.cells["lag"].isdigit()
        assert row.health.startswith("ok")
    assert f"leader {leader}" in view.note
    members = state(observation).members
    assert all(m.has_leader and m.leader == leader for m in members.values())
    assert {c.key for c in view.columns} == {"term", "index", "lag", "db", "alarms"}


async def test_a_killed_member_is_down_and_restarting_it_clears_the_ticket(etcd: Etcd):
    etcd.cluster.kill_member("member-2")
    observation, _violation = await etcd.fired("member_down", "member-2", timeout=5)
    member = state(observation).members["member-2"]
    assert member.process == "killed" and member.error_kind == "refused"
    assert not member.answers and member.health is not True  # a silent member is never healthy
    assert not observation.sources["status:member-2"].ok
    assert etcd.violations(observation, "quorum_lost") == []  # two of three still answer
    result = await etcd.investigate("member_down", "member-2")
    assert result.diagnosis is not None and result.diagnosis.label == "member_process_died"
    assert recommended(result) == ("restart_member", {"member": "member-2"})
    assert "restarted member-2 (was killed)" in await run(
        etcd, "restart_member", {"member": "member-2"}
    )
    await etcd.until(lambda o: not etcd.violations(o, "member_down"), "member_down clears")
    # A member that runs and answers is left alone.
    assert "nothing to restart" in await run(etcd, "restart_member", {"member": "member-2"})


async def test_killing_the_leader_names_it_and_the_others_elect_anew(etcd: Etcd):
    before = await etcd.leader()
    fault = etcd.lab.make_fault("leader_kill", "leader", {})
    await fault.inject()
    assert fault.target == before
    _, violation = await etcd.fired("member_down", before, timeout=5)
    assert "process killed" in violation.message
    observation, _after = await etcd.until(
        lambda o: o.state.leader if o.state.leader not in (None, before) else None,
        "a new leader",
    )
    assert state(observation).term is not None
    await fault.clear()


async def test_a_paused_member_is_down_and_resuming_it_clears_the_ticket(etcd: Etcd):
    etcd.cluster.pause_member("member-3")
    observation, _violation = await etcd.fired("member_down", "member-3", timeout=8)
    assert state(observation).members["member-3"].process == "paused"
    result = await etcd.investigate("member_down", "member-3")
    assert result.diagnosis is not None and result.diagnosis.label == "member_process_paused"
    assert recommended(result) == ("resume_member", {"member": "member-3"})
    # A restart is refused for a paused member: it is not the fix.
    with pytest.raises(RuntimeError, match="resume_member"):
        await run(etcd, "restart_member", {"member": "member-3"})
    assert "SIGCONT" in await run(etcd, "resume_member", {"member": "member-3"})
    await etcd.until(lambda o: not etcd.violations(o, "member_down"), "member_down clears")


async def test_killing_a_majority_loses_quorum_and_one_restart_brings_it_back(etcd: Etcd):
    fault = etcd.lab.make_fault("quorum_kill", "member-2", {})
    await fault.inject()
    observation, violation = await etcd.fired("quorum_lost", "cluster", timeout=5)
    assert violation.details["up"] == ["member-1"] and violation.details["quorum"] == 2
    # The survivor knows no leader, but that is the quorum's ticket, not a second one.
    assert etcd.violations(observation, "no_leader") == []
    result = await etcd.investigate("quorum_lost", "cluster")
    assert result.diagnosis is not None and result.diagnosis.label == "quorum_members_died"
    action, params = recommended(result) or ("", {})
    assert action == "restart_member" and params["member"] in ("member-2", "member-3")
    await run(etcd, action, params)
    await etcd.until(lambda o: not etcd.violations(o, "quorum_lost"), "quorum back")
    await fault.clear()


async def test_a_partitioned_follower_is_diagnosed_and_left_alone(etcd: Etcd):
    leader = await etcd.leader()
    follower = next(n for n in reversed(etcd.cluster.member_names) if n != leader)
    etcd.cluster.peer_links.partition(follower)
    observation, _violation = await etcd.fired("no_leader", follower, timeout=15)
    cut = state(observation).members[follower]
    assert cut.answers and cut.status_ok and not cut.leader_id
    # The cluster keeps its quorum: no member is down and nothing else carries the ticket.
    assert etcd.violations(observation, "member_down") == []
    assert etcd.violations(observation, "quorum_lost") == []
    assert etcd.violations(observation, "apply_lag") == []
    await asyncio.sleep(1.0)  # let the peers' failed sends show in their metrics
    result = await etcd.investigate("no_leader", follower)
    diagnosis = result.diagnosis
    assert diagnosis is not None and diagnosis.label == "member_partitioned"
    assert recommended(result) is None  # restraint: no restart, no action at all
    assert result.escalation is not None and "cut off from its peers" in result.escalation
    claims = " ".join(e.claim for e in diagnosis.evidence)
    assert "knows no leader" in claims and "a quorum without" in claims
    assert "failed peer sends" in claims or "log" in claims


async def test_leaders_lost_again_and_again_are_flapping(etcd: Etcd):
    for _ in range(3):
        leader = await etcd.leader()
        etcd.cluster.peer_links.partition(leader)
        await etcd.until(
            lambda o, old=leader: (
                o.state.leader not in (None, old) and o.state.members[old].is_leader is False
            ),
            "a new leader without the partitioned one",
        )
        etcd.cluster.peer_links.heal(leader)
    _, violation = await etcd.fired("leader_flapping", "cluster", timeout=20)
    assert max(violation.details["changes"].values()) >= 3
    result = await etcd.investigate("leader_flapping", "cluster")
    assert result.diagnosis is not None
    assert result.diagnosis.label in ("peer_links_failing", "elections_settled")
    assert recommended(result) is None
