"""The etcd workload: real traffic over real members, ground truth of every acknowledged write."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio

from operator_console.lab.etcd.binary import EtcdBinaryError, find_etcd
from operator_console.lab.etcd.client import KeyValue
from operator_console.lab.etcd.cluster import EtcdCluster
from operator_console.lab.etcd.workload import Ack, EtcdWorkload, WriteLedger

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

SAMPLE_KEYS = {
    "at",
    "interval_s",
    "puts_per_s",
    "gets_per_s",
    "deletes_per_s",
    "errors_per_s",
    "p50_ms",
    "p99_ms",
    "leader",
    "raft_term",
    "leader_changes",
    "acknowledged_writes",
    "error_kinds",
    "per_member",
}


def kv(key: str, value: str, revision: int) -> KeyValue:
    return KeyValue(key, value, create_revision=1, mod_revision=revision, version=1)


# ------------------------------------------------------------------ the checker alone


async def test_the_ledger_judges_each_key_by_its_latest_acknowledged_write():
    ledger = WriteLedger()
    ledger.record(Ack("kept", "put", 5, "a"))
    ledger.record(Ack("superseded", "put", 6, "b"))
    ledger.record(Ack("vanished", "put", 7, "c"))
    ledger.record(Ack("rolled-back", "put", 8, "d"))
    ledger.record(Ack("rolled-back", "put", 3, "old"))  # a late ack of an older write
    ledger.record(Ack("deleted", "put", 9, "e"))
    ledger.record(Ack("deleted", "delete", 10))
    ledger.record(Ack("deleted-then-new", "delete", 11))
    ledger.record(Ack("resurrected", "put", 2, "f"))
    ledger.record(Ack("resurrected", "delete", 12))
    ledger.record(Ack("maybe-deleted", "put", 13, "g"))
    ledger.record_uncertain_delete("maybe-deleted")
    found = {
        "kept": kv("kept", "a", 5),
        "superseded": kv("superseded", "z", 20),  # a later, unacknowledged write
        "rolled-back": kv("rolled-back", "old", 3),
        "deleted-then-new": kv("deleted-then-new", "h", 21),
        "resurrected": kv("resurrected", "f", 2),  # the acknowledged delete was lost
    }
    lost = WriteLedger.check(ledger.snapshot(), found)
    assert [(w.key, w.kind) for w in lost] == [
        ("resurrected", "delete"),
        ("rolled-back", "put"),
        ("vanished", "put"),
    ]
    rolled = next(w for w in lost if w.key == "rolled-back")
    assert (rolled.revision, rolled.found_revision, rolled.found_value) == (8, 3, "old")
    assert lost[2].to_dict()["found_value"] is None
    assert ledger.acknowledged == 11


async def test_adjust_validates_and_normalises():
    workload = EtcdWorkload({"m": "http://127.0.0.1:1"}, rate=10)
    workload.adjust(rate=0)
    assert workload.rate == 0
    workload.adjust({"mix": {"put": 3, "get": 1}})
    assert workload.mix == {"put": 0.75, "get": 0.25, "delete": 0.0}
    with pytest.raises(ValueError, match="rate must be a finite number"):
        workload.adjust(rate=-1)
    with pytest.raises(ValueError, match="unknown operations"):
        workload.adjust(mix={"scan": 1.0})
    with pytest.raises(ValueError, match="unknown workload settings: burst"):
        workload.adjust({"burst": 3})
    await workload.stop()


# ------------------------------------------------------------------ against a cluster


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EtcdCluster]:
    try:
        binary = find_etcd()
    except EtcdBinaryError as exc:
        pytest.skip(str(exc))
    lab = EtcdCluster(tmp_path_factory.mktemp("etcd-workload"), members=3, binary=binary)
    await lab.start()
    try:
        yield lab
    finally:
        await lab.stop()


async def until(probe: Callable[[], bool | Awaitable[bool]], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = probe()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for: {what}")


async def test_samples_every_second_spread_over_members_and_follow_adjust(cluster: EtcdCluster):
    samples: list[dict[str, Any]] = []
    workload = EtcdWorkload(
        cluster.client_urls(), rate=60, prefix="spread/", on_sample=samples.append, seed=1
    )
    await workload.start()
    try:
        await until(lambda: len(samples) >= 2, "two samples", 5.0)
        busy = samples[1]
        assert set(busy) == SAMPLE_KEYS
        assert busy["puts_per_s"] > 10 and busy["gets_per_s"] > 5
        # A stray timeout on a loaded machine is not what this test is about.
        assert busy["errors_per_s"] < 3 and busy["leader_changes"] == 0
        assert busy["leader"] == await cluster.leader()
        assert busy["p50_ms"] is not None and busy["p99_ms"] >= busy["p50_ms"]
        # Round robin: every member served a share.
        assert set(busy["per_member"]) == set(cluster.member_names)
        assert min(m["ops"] for m in busy["per_member"].values()) >= 5
        workload.adjust(rate=0)
        count = len(samples)
        await until(lambda: len(samples) >= count + 2, "two more samples", 5.0)
        idle = samples[-1]
        assert idle["puts_per_s"] == idle["gets_per_s"] == 0
        assert idle["acknowledged_writes"] == workload.ledger.acknowledged > 0
    finally:
        await workload.stop()


async def test_no_acknowledged_write_is_lost_through_a_leader_kill(cluster: EtcdCluster):
    samples: list[dict[str, Any]] = []
    workload = EtcdWorkload(
        cluster.client_urls(), rate=80, prefix="leader-kill/", on_sample=samples.append, seed=2
    )
    fault = cluster.make_fault("leader_kill", None, {})
    await workload.start()
    try:
        await until(lambda: workload.ledger.acknowledged >= 40, "writes before the kill", 5.0)
        before = workload.ledger.acknowledged
        await fault.inject()
        await until(
            lambda: any(s["leader_changes"] for s in samples), "a sample sees the new leader", 10.0
        )
        # Writes go on through the survivors once they have elected a new leader.
        resumed = workload.ledger.acknowledged
        await until(lambda: workload.ledger.acknowledged > resumed + 40, "writes resume", 10.0)
        await fault.clear()
        await until(lambda: workload.ledger.acknowledged > resumed + 80, "writes go on", 10.0)
    finally:
        await workload.pause()
    assert workload.ledger.acknowledged > before
    changed = [s for s in samples if s["leader_changes"]]
    assert changed[0]["leader"] != fault.target
    await workload.stop()
    assert await workload.lost_writes() == []  # the read-back works after stop() too


async def test_the_checker_reports_acknowledged_writes_removed_behind_its_back(
    cluster: EtcdCluster,
):
    workload = EtcdWorkload(
        cluster.client_urls(),
        rate=100,
        keys=40,
        prefix="tamper/",
        mix={"put": 0.7, "delete": 0.3},
        seed=3,
    )
    await workload.start()
    try:
        await until(lambda: workload.ledger.acknowledged >= 120, "enough writes", 10.0)
    finally:
        await workload.pause()
    assert await workload.lost_writes() == []
    present = [k for k in workload.ledger.keys() if workload.ledger.latest(k).kind == "put"]  # type: ignore[union-attr]
    deleted = [k for k in workload.ledger.keys() if workload.ledger.latest(k).kind == "delete"]  # type: ignore[union-attr]
    assert len(present) >= 3 and deleted
    outsider = cluster.client("member-2")
    for key in present[:3]:
        await outsider.delete(key)
    # A key the workload deleted and someone else wrote again is a new write, not a loss.
    await outsider.put(deleted[0], "someone else")
    lost = await workload.lost_writes()
    assert sorted(w.key for w in lost) == sorted(present[:3])
    assert all(w.kind == "put" and w.found_value is None for w in lost)
    await workload.stop()
