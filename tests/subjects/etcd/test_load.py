"""The etcd subject on a real 3-member cluster with a 16 MiB quota: space, slowness and the
clients. A full quota, slow peer links and a lost write are made for real (a burst of writes,
delayed bytes on the links, a delete behind the clients' back) and caught by their invariants."""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest
import pytest_asyncio

from operator_console.domain import Observation
from operator_console.domain.events import ActionStep, ActionVerified, TicketResolved
from operator_console.subjects.etcd.invariants import ApplyLag, ErrorRate, LatencySLO
from operator_console.subjects.etcd.spec import ThresholdSpec
from operator_console.subjects.etcd.state import EtcdState
from operator_console.subjects.etcd.workload import PREFIX, EtcdTraffic
from tests.executor_harness import loops
from tests.subjects.etcd.conftest import Etcd, deployed, recommended

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

QUOTA = 16 * 1024 * 1024


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def etcd(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Etcd]:
    run_dir: Path = tmp_path_factory.mktemp("etcd-load")
    topology = {"members": 3, "quota_backend_bytes": QUOTA}
    async for lab in deployed(run_dir, topology, {"rate": 30, "check_every_s": 0.5}):
        yield lab
        assert lab.split_leaders_seen() == []


@pytest_asyncio.fixture(autouse=True, loop_scope="module")
async def whole_afterwards(etcd: Etcd) -> AsyncIterator[None]:
    yield
    await etcd.restore()
    etcd.cluster.peer_links.restore()


def state(observation: Observation) -> EtcdState:
    assert isinstance(observation.state, EtcdState)
    return observation.state


async def run(etcd: Etcd, action: str, params: dict[str, object]) -> str:
    spec = etcd.kit.actions.get(action)
    return await spec.run(spec.validate(params))


async def test_a_full_quota_raises_nospace_and_recover_nospace_reclaims_it(
    etcd: Etcd, tmp_path: Path
) -> None:
    fault = etcd.lab.make_fault("quota_fill", "cluster", {})
    await fault.inject()
    observation, violation = await etcd.fired("nospace_alarm", "cluster", timeout=10)
    assert violation.details["members"]
    assert etcd.violations(observation, "db_near_quota") == []  # nospace_alarm carries it
    view = etcd.deployment.subject.panel(observation)
    assert any("NOSPACE" in row.cells["alarms"] for row in view.rows)
    assert "NOSPACE" in view.note and "16.0 MiB" in view.rows[0].cells["db"]
    result = await etcd.investigate("nospace_alarm", "cluster")
    assert result.diagnosis is not None and result.diagnosis.label == "quota_exhausted"
    assert recommended(result) == ("recover_nospace", {})
    # The runbook is a chain: one approval, each step run, reported and checked in turn.
    async with loops(etcd.deployment, tmp_path) as run_loops:
        ticket = await run_loops.ticket("nospace_alarm", "cluster")
        row = await run_loops.propose(ticket, "recover_nospace", {})
        members = etcd.cluster.member_names
        assert [s["action"] for s in row.steps or []] == [
            "compact",
            *["defragment"] * len(members),
            "disarm_alarm",
            "probe_write",
        ]
        last = await run_loops.approve_and_wait(row)
        assert isinstance(last, ActionVerified), last
        done = run_loops.of(ActionStep, action_id=row.id, step_state="succeeded")
        assert [(e.index, e.step) for e in done] == [
            (i, s["action"]) for i, s in enumerate(row.steps or [], start=1)
        ]
        assert done[0].detail.startswith("compacted the history to revision")
        assert [e.step_params["member"] for e in done[1:4]] == members  # each in turn
        assert "disarmed NOSPACE" in done[4].detail and "a test write" in done[5].detail
        await run_loops.next(TicketResolved, ticket_id=ticket.id)
    await fault.clear()


async def fill_to(etcd: Etcd, ratio: float) -> None:
    """A real burst of writes, as quota_fill does, but stopped just past `ratio` of the quota:
    a few keys overwritten with 64 KiB values, their old revisions kept (nothing compacts)."""
    client = etcd.cluster.client(await etcd.leader())
    value = base64.b64encode(os.urandom(48 * 1024)).decode()
    for i in range(2000):
        await client.put(f"test/fill/{i % 4}", value, timeout=5.0)
        sizes = [s.db_size for s in (await etcd.cluster.statuses(timeout=2.0)).values() if s]
        if len(sizes) == len(etcd.cluster.member_names) and min(sizes) >= ratio * QUOTA:
            return
    raise AssertionError("the writes did not fill the database")


async def test_history_near_the_quota_is_compacted_then_defragmented(etcd: Etcd):
    await fill_to(etcd, 0.81)
    observation, violation = await etcd.fired("db_near_quota", "member-1", timeout=10)
    assert violation.details["db_size"] >= 0.8 * QUOTA
    assert etcd.violations(observation, "nospace_alarm") == []  # short of the quota: no alarm
    result = await etcd.investigate("db_near_quota", "member-1")
    assert result.diagnosis is not None and result.diagnosis.label == "history_holds_space"
    assert recommended(result) == ("recover_nospace", {})
    # Half that runbook, as a hurried operator might: compact, no defragmentation.
    await run(etcd, "compact", {})

    def fragmented(observation: Observation) -> list[object]:
        return [
            v
            for v in etcd.violations(observation, "db_near_quota")
            if v.target == "member-1" and v.details["db_size_in_use"] < v.details["db_size"] / 2
        ]

    # The file keeps its size; what is in use drops once the member has applied the compaction.
    await etcd.until(fragmented, "member-1 near its quota with mostly free pages", timeout=15)
    result = await etcd.investigate("db_near_quota", "member-1")
    assert result.diagnosis is not None and result.diagnosis.label == "db_fragmented"
    assert recommended(result) == ("defragment", {"member": "member-1"})
    assert "defragmented member-1" in await run(etcd, "defragment", {"member": "member-1"})
    await etcd.until(
        lambda o: not any(v.target == "member-1" for v in etcd.violations(o, "db_near_quota")),
        "member-1 below its quota again",
    )
    for member in etcd.cluster.member_names[1:]:
        await run(etcd, "defragment", {"member": member})


async def test_a_slow_leader_is_slow_member_and_moving_leadership_away_ends_it(etcd: Etcd):
    leader = await etcd.leader()
    fault = etcd.lab.make_fault("peer_latency", "leader", {"ms": 150})
    await fault.inject()
    assert fault.target == leader
    observation, violation = await etcd.fired("slow_member", leader, timeout=15)
    assert violation.details["quorum_ms"] > 200
    result = await etcd.investigate("slow_member", leader, limit_ms=200)
    assert result.diagnosis is not None and result.diagnosis.label == "slow_leader_links"
    action, params = recommended(result) or ("", {})
    assert action == "move_leader" and params["to"] != leader
    assert f"to {params['to']}" in await run(etcd, action, params)
    await etcd.until(
        lambda o: o.state.leader == params["to"] and not etcd.violations(o, "slow_member"),
        "the new leader is fast",
    )
    # The mitigation leaves the cause: the old leader is still slow as a follower.
    condition = etcd.deployment.subject.condition("member_slow", leader, observation)
    assert condition is not None and condition.holds
    await fault.clear()


async def test_a_slow_follower_lags_and_slows_the_clients(etcd: Etcd):
    leader = await etcd.leader()
    follower = next(n for n in reversed(etcd.cluster.member_names) if n != leader)
    etcd.deployment.workload.adjust({"rate": 80, "mix": {"put": 1.0}})  # type: ignore[union-attr]
    try:
        etcd.cluster.peer_links.set_latency(follower, 300)
        lag = ApplyLag(ThresholdSpec(apply_lag_entries=15))
        observation, lagging = await etcd.until(
            lambda o: [v for v in lag.check(o) if v.target == follower], f"{follower} lags"
        )
        assert lagging[0].details["apply_lag"] > 15
        assert etcd.violations(observation, "slow_member") == []  # the leader is fast
        slo = LatencySLO(ThresholdSpec(latency_p99_ms=250))
        _, slow = await etcd.until(lambda o: slo.check(o), "clients over the SLO", timeout=15)
        # Every request through the follower pays its link twice (to the leader and back).
        assert slow[0].details["per_member_p99_ms"][follower] > 250
        result = await etcd.investigate("apply_lag", follower)
        assert result.diagnosis is not None and result.diagnosis.label == "follower_slow_link"
        assert recommended(result) is None
    finally:
        etcd.deployment.workload.adjust(
            {"rate": 30, "mix": {"put": 0.5, "get": 0.4, "delete": 0.1}}
        )  # type: ignore[union-attr]


async def test_a_leader_too_slow_for_the_clients_timeouts_breaks_the_error_budget(etcd: Etcd):
    await etcd.leader()
    await etcd.until(
        lambda o: o.state.traffic is not None and o.state.traffic.errors == 0, "a clean window"
    )
    fault = etcd.lab.make_fault("peer_latency", "leader", {"ms": 450})
    await fault.inject()
    errors = ErrorRate(ThresholdSpec(error_rate=0.05))
    _, found = await etcd.until(lambda o: errors.check(o), "errors over budget", timeout=20)
    assert found[0].details["errors"] > 0
    kinds = found[0].details["error_kinds"]
    assert "nospace" not in kinds and set(kinds) & {"unavailable", "request_timed_out"}
    await fault.clear()


async def test_an_acknowledged_write_deleted_behind_the_clients_back_is_a_lost_write(etcd: Etcd):
    traffic = etcd.deployment.workload
    assert isinstance(traffic, EtcdTraffic)
    await etcd.until(
        lambda o: (
            o.state.ledger is not None and o.state.ledger.checked > 0 and not o.state.ledger.lost
        ),
        "a clean ledger check",
    )
    traffic.adjust({"rate": 0})
    await traffic.adjusted()
    await idle(traffic)
    acks = await traffic.ledger()
    key = next(k for k, ack in acks.items() if ack.kind == "put")
    await etcd.cluster.client("member-1").delete(key)  # a real delete the clients never made
    _observation, violation = await etcd.fired("lost_writes", "workload", timeout=10)
    assert violation.details["lost"][0]["key"] == key and key.startswith(PREFIX)
    result = await etcd.investigate("lost_writes", "workload")
    assert result.diagnosis is not None
    assert result.diagnosis.label == "acknowledged_writes_lost"
    assert recommended(result) is None and result.escalation
    traffic.adjust({"rate": 30})


async def test_the_clients_are_a_process_of_their_own_that_the_observer_reads(etcd: Etcd):
    traffic = etcd.deployment.workload
    assert isinstance(traffic, EtcdTraffic)
    pid = traffic.pid
    assert pid is not None and pid != os.getpid()
    assert psutil.Process(pid).ppid() == os.getpid()
    assert etcd.cluster.endpoints()["clients"]["pid"] == pid
    observation, _ = await etcd.until(
        lambda o: o.state.traffic is not None and o.state.traffic.finished > 0, "a window"
    )
    view = state(observation).traffic
    assert view is not None and set(view.per_member) <= set(etcd.cluster.member_names)
    assert view.acknowledged > 0
    assert observation.sources["clients"].state.value == "ok"
    # A clients process that stops answering is a failed source, never a quiet cluster.
    psutil.Process(pid).suspend()
    try:
        _, failed = await etcd.until(
            lambda o: o.sources["clients"].state.value != "ok", "the clients' source failing"
        )
        assert failed
    finally:
        psutil.Process(pid).resume()


async def idle(traffic: EtcdTraffic, timeout: float = 10.0) -> None:
    """Until the clients have no request in flight (what they send has an answer)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        health = await traffic.health()
        if health["rate"] == 0 and health["in_flight"] == 0:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the clients still have requests in flight")
