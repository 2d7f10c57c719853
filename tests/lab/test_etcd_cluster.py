"""A real 3-member etcd cluster: every fault has its real effect on raft, and clears again."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import psutil
import pytest
import pytest_asyncio
from prometheus_client.parser import text_string_to_metric_families

from operator_console.lab.etcd.binary import EtcdBinary, EtcdBinaryError, find_etcd
from operator_console.lab.etcd.client import EtcdClient, EtcdError, EtcdUnavailableError
from operator_console.lab.etcd.cluster import EtcdCluster
from operator_console.lab.etcd.faults import FAULT_KINDS, QuorumKill, QuotaFill
from operator_console.lab.supervisor import ProcessStartError

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

QUOTA = 16 * 1024 * 1024
MEMBERS = ["member-1", "member-2", "member-3"]


def etcd_or_skip() -> EtcdBinary:
    try:
        return find_etcd()
    except EtcdBinaryError as exc:
        pytest.skip(str(exc))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EtcdCluster]:
    lab = EtcdCluster(
        tmp_path_factory.mktemp("etcd"), members=3, binary=etcd_or_skip(), quota_backend_bytes=QUOTA
    )
    await lab.start()
    try:
        yield lab
    finally:
        await lab.stop()


async def eventually(
    probe: Callable[[], Awaitable[bool]], what: str, timeout: float = 10.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await probe():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for: {what}")


async def remediate_nospace(cluster: EtcdCluster) -> None:
    """The runbook for NOSPACE: compact to now, defragment every member, disarm the alarm."""
    client = cluster.client("member-1")
    revision = (await client.status()).revision
    await client.compact(revision)
    for name in cluster.member_names:
        await cluster.client(name).defragment()
    assert await client.disarm() == []


@pytest_asyncio.fixture(autouse=True, loop_scope="module")
async def healthy_afterwards(cluster: EtcdCluster) -> AsyncIterator[None]:
    """Put the cluster back to whole after each test so one failure does not cascade."""
    yield
    cluster.peer_links.restore()
    down = []
    for name in cluster.member_names:
        status = cluster.member_status(name)
        if status == "paused":
            cluster.resume_member(name)
        elif status != "running":
            down.append(name)
    await asyncio.gather(*(cluster.restart_member(n) for n in down))
    if await cluster.client("member-1").alarms():
        await remediate_nospace(cluster)

    async def whole() -> bool:
        statuses = await cluster.statuses()
        leaders = {s.leader for s in statuses.values() if s is not None}
        return (
            all(s is not None for s in statuses.values()) and len(leaders) == 1 and 0 not in leaders
        )

    await eventually(whole, "every member answers and agrees on one leader")


async def put_via(
    cluster: EtcdCluster, name: str, key: str, value: str, timeout: float = 3.0
) -> int:
    return (await cluster.client(name).put(key, value, timeout=timeout)).revision


def others(target: str) -> list[str]:
    return [n for n in MEMBERS if n != target]


async def a_follower(cluster: EtcdCluster) -> str:
    leader = await cluster.leader()
    return next(n for n in reversed(MEMBERS) if n != leader)


# --------------------------------------------------------------------------- topology


async def test_three_members_start_and_each_answers_a_put(cluster: EtcdCluster):
    assert cluster.startup_s is not None and cluster.startup_s < cluster.start_timeout
    ends = cluster.endpoints()
    assert json.loads(json.dumps(ends)) == ends
    assert sorted(ends["members"]) == MEMBERS
    assert ends["tls"] is None
    assert ends["binary"]["path"] == cluster.binary.path
    peer_ports = set()
    for name, info in ends["members"].items():
        assert psutil.Process(info["pid"]).name().startswith("etcd")
        assert info["client_url"] == cluster.client_url(name)
        assert info["peer_url"] == f"http://127.0.0.1:{info['peer_proxy_port']}"
        assert info["peer_url"] != info["peer_listen_url"]
        assert Path(info["data_dir"]).is_dir() and Path(info["data_dir"]).parent == cluster.run_dir
        assert cluster.supervisor.log_path(name).is_file()
        peer_ports.add(info["peer_proxy_port"])
        revision = await put_via(cluster, name, f"start/{name}", name)
        got = await cluster.client(name).get(f"start/{name}")
        assert got is not None and got.value == name and got.mod_revision == revision
    assert len(peer_ports) == 3
    # The members know each other by their proxies' URLs: all peer traffic goes through them.
    members = await cluster.client("member-2").member_list()
    assert {m.name: m.peer_urls for m in members} == {n: (cluster.peer_url(n),) for n in MEMBERS}
    assert {m.name: f"{m.id:x}" for m in members} == {
        n: ends["members"][n]["member_id"] for n in MEMBERS
    }
    assert await cluster.leader() in MEMBERS


async def test_every_peer_connection_is_attributed_to_the_member_that_dialled_it(
    cluster: EtcdCluster,
):
    async def attributed() -> bool:
        state = cluster.peer_links.state()
        return all(set(state[n]["sources"]) == set(others(n)) for n in MEMBERS)

    await eventually(attributed, "each proxy carries streams from both other members")
    for name, info in cluster.peer_links.state().items():
        assert "unknown" not in info["sources"], (name, info)
    # etcd's rafthttp names the dialler in X-Server-From: each ID the proxies read from those
    # headers belongs to the member whose process the kernel says owns the socket.
    assert cluster.peer_links.known_ids == {f"{cluster.member_id(n):x}": n for n in MEMBERS}
    # A connection from outside the cluster is not mistaken for a member.
    proxy = cluster.peer_links.proxy("member-1")
    with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
        sock.sendall(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"etcdserver" in sock.recv(4096)
        assert proxy.state["sources"].get("unknown") == 1


async def test_fault_catalogue_and_validation(cluster: EtcdCluster):
    assert list(cluster.fault_kinds()) == [
        "member_kill",
        "leader_kill",
        "member_pause",
        "quorum_kill",
        "peer_partition",
        "peer_latency",
        "quota_fill",
    ]
    assert tuple(cluster.fault_kinds()) == FAULT_KINDS
    defaults = {"leader_kill": "leader", "quota_fill": "cluster"}
    for kind in FAULT_KINDS:
        fault = cluster.make_fault(kind, None, {})
        assert fault.kind == kind
        assert fault.target == defaults.get(kind, "member-2")
        assert fault.describe()
    with pytest.raises(ValueError, match=r"unknown fault kind 'meteor'.*member_kill.*quota_fill"):
        cluster.make_fault("meteor", None, {})
    with pytest.raises(ValueError, match=r"'member-9'.*member-1, member-2, member-3"):
        cluster.make_fault("member_kill", "member-9", {})
    with pytest.raises(ValueError, match="valid targets: leader"):
        cluster.make_fault("leader_kill", "member-1", {})
    with pytest.raises(ValueError, match="'member_kill' has no parameter 'ms'"):
        cluster.make_fault("member_kill", "member-1", {"ms": 5})
    with pytest.raises(ValueError, match="'ms' must be a number"):
        cluster.make_fault("peer_latency", "member-1", {"ms": "slow"})
    assert "250 ms" in cluster.make_fault("peer_latency", "member-3", {"ms": 250}).describe()
    quorum = cluster.make_fault("quorum_kill", "member-3", {})
    assert isinstance(quorum, QuorumKill) and quorum.victims == ["member-3", "member-1"]
    assert "16 MiB" in cluster.make_fault("quota_fill", None, {}).describe()
    big = EtcdCluster(cluster.run_dir / "unused", members=3)
    with pytest.raises(ValueError, match=r"quota_fill.*small quota_backend_bytes.*default 2 GiB"):
        big.make_fault("quota_fill", None, {})
    single = EtcdCluster(cluster.run_dir / "unused", members=1)
    with pytest.raises(ValueError, match="'peer_partition' needs at least 2 members"):
        single.make_fault("peer_partition", None, {})
    with pytest.raises(ValueError, match="members must be one of"):
        EtcdCluster(cluster.run_dir / "unused", members=4)


# ----------------------------------------------------------------------------- faults


async def test_member_kill_then_clear_brings_it_back_with_its_data_and_ports(
    cluster: EtcdCluster,
):
    target = await a_follower(cluster)
    fault = cluster.make_fault("member_kill", target, {})
    url = cluster.client_url(target)
    old_pid = cluster.supervisor.pid(target)
    await fault.inject()
    assert cluster.member_status(target) == "killed"
    assert not psutil.pid_exists(old_pid)
    with pytest.raises(EtcdUnavailableError, match=url):
        await cluster.client(target).status()
    # Two of three still commit; the write lands while the target is down.
    revision = await put_via(cluster, others(target)[0], "kill/while-down", "yes")
    await fault.clear()
    assert cluster.member_status(target) == "running"
    assert cluster.supervisor.pid(target) != old_pid
    assert cluster.client_url(target) == url
    got = await cluster.client(target).get("kill/while-down", serializable=True)
    assert got is not None and got.mod_revision == revision  # caught up from its old data dir
    await fault.clear()  # clearing twice is harmless


async def test_member_pause_silences_it_until_cleared(cluster: EtcdCluster):
    target = await a_follower(cluster)
    fault = cluster.make_fault("member_pause", target, {})
    await fault.inject()
    assert cluster.member_status(target) == "paused"
    assert psutil.Process(cluster.supervisor.pid(target)).status() == psutil.STATUS_STOPPED
    with pytest.raises(EtcdUnavailableError, match="did not answer"):
        await cluster.client(target).status(timeout=0.5)
    await put_via(cluster, others(target)[0], "pause/others-commit", "yes")
    await fault.clear()
    assert cluster.member_status(target) == "running"
    status = await cluster.client(target).status()
    assert status.leader != 0


async def test_leader_kill_makes_the_others_elect_a_new_leader(cluster: EtcdCluster):
    fault = cluster.make_fault("leader_kill", None, {})
    old = await cluster.leader()
    assert old is not None
    await fault.inject()
    killed_at = time.monotonic()
    assert fault.target == old
    assert cluster.member_status(old) == "killed"
    assert old in fault.describe()
    new: str | None = None

    async def elected() -> bool:
        nonlocal new
        new = await cluster.leader()
        return new is not None and new != old

    await eventually(elected, "a new leader among the survivors")
    election_s = time.monotonic() - killed_at
    print(f"\nleader_kill: {old} killed, {new} elected after {election_s:.2f} s")
    # The election timeout is 1 s: no one may take over before a follower's timer fires.
    assert election_s >= cluster.election_ms / 1000 * 0.5
    await put_via(cluster, new or "", "leader-kill/after", "yes")
    await fault.clear()
    assert cluster.member_status(old) == "running"
    rejoined = await cluster.client(old).status()
    assert rejoined.leader != 0 and not rejoined.is_leader  # back as a follower


async def test_quorum_kill_stops_writes_until_the_members_return(cluster: EtcdCluster):
    fault = cluster.make_fault("quorum_kill", "member-1", {})
    assert isinstance(fault, QuorumKill)
    assert fault.victims == ["member-1", "member-2"]
    await fault.inject()
    assert [cluster.member_status(n) for n in MEMBERS] == ["killed", "killed", "running"]
    with pytest.raises(EtcdError, match=cluster.client_url("member-3")):
        await put_via(cluster, "member-3", "quorum/lost", "no", timeout=1.5)

    async def leaderless() -> bool:
        return (await cluster.client("member-3").status()).leader == 0

    await eventually(leaderless, "member-3's election timer fires and it has no leader")
    assert not (await cluster.client("member-3").health(timeout=3.0)).healthy
    await fault.clear()
    assert [cluster.member_status(n) for n in MEMBERS] == ["running"] * 3
    revision = await put_via(cluster, "member-3", "quorum/back", "yes")
    assert revision > 0


async def test_peer_partition_cuts_both_directions_and_heals(cluster: EtcdCluster):
    target = await cluster.leader()
    assert target is not None
    rest = others(target)
    links = cluster.peer_links
    before = links.state()
    assert before[target]["sources"] and all(target in before[n]["sources"] for n in rest)
    fault = cluster.make_fault("peer_partition", target, {})
    await fault.inject()
    after = links.state()
    # Open connections dropped at once: none into the target, none from it into the others.
    assert after[target]["connections"] == 0
    assert all(target not in after[n]["sources"] for n in rest)

    async def majority_elected() -> bool:
        statuses = await cluster.statuses()
        leaders = {s.leader for n, s in statuses.items() if n in rest and s is not None}
        return len(leaders) == 1 and cluster.member_id(target) not in leaders and 0 not in leaders

    await eventually(majority_elected, "the majority elects a leader without the target")

    # The old leader steps down (check quorum): it cannot see a majority any more.
    async def stepped_down() -> bool:
        return not (await cluster.client(target).status()).is_leader

    await eventually(stepped_down, f"{target} gives up leadership")
    revision = await put_via(cluster, rest[0], "partition/majority", "committed")
    with pytest.raises(EtcdError):
        await put_via(cluster, target, "partition/minority", "never", timeout=1.5)
    # Both directions were really refused: the others' redials into the target, and the
    # target's redials into each of the others.
    refused = links.state()
    assert sum(refused[target]["refused"].get(n, 0) for n in rest) > 0
    assert all(refused[n]["refused"].get(target, 0) > 0 for n in rest)
    await fault.clear()
    assert not links.partitioned

    async def caught_up() -> bool:
        got = await cluster.client(target).get("partition/majority", serializable=True)
        return got is not None and got.mod_revision == revision

    await eventually(caught_up, f"{target} catches up after the partition heals")
    assert await cluster.client(target).get("partition/minority", serializable=True) is None


def round_trip_to_peers(text: str) -> dict[str, tuple[float, float]]:
    """Per peer ID: (sum, count) of etcd_network_peer_round_trip_time_seconds."""
    found: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "etcd_network_peer_round_trip_time_seconds":
            continue
        for sample in family.samples:
            peer = sample.labels.get("To", "")
            if sample.name.endswith("_sum"):
                found.setdefault(peer, [0.0, 0.0])[0] = sample.value
            elif sample.name.endswith("_count"):
                found.setdefault(peer, [0.0, 0.0])[1] = sample.value
    return {peer: (total, count) for peer, (total, count) in found.items()}


async def test_peer_latency_raises_the_peer_round_trip_etcd_measures(cluster: EtcdCluster):
    """etcd's prober (github.com/xiang90/probing) probes each peer every 4 s and keeps a
    smoothed round trip, srtt = 7/8 srtt + 1/8 rtt starting from 0; etcd records it 5 s after
    probing starts, then every 30 s. Restarting the member under latency starts that clock
    now, and its first reading is at least 1/8 of a probe's real round trip."""
    target, ms = "member-2", 100.0
    fault = cluster.make_fault("peer_latency", target, {"ms": ms})
    await fault.inject()
    assert cluster.peer_links.state()[target]["latency_ms"] == ms
    await cluster.restart_member(target)
    client = cluster.client(target)
    rtt: dict[str, tuple[float, float]] = {}

    async def observed() -> bool:
        nonlocal rtt
        rtt = round_trip_to_peers(await client.metrics())
        return len(rtt) == 2 and all(count >= 1 for _, count in rtt.values())

    await eventually(observed, f"{target} records a round trip to each peer", timeout=15.0)
    # A probe crosses the slowed link both ways: a round trip of at least 2 x 100 ms, so a
    # first reading of at least 25 ms, where loopback gives a fraction of a millisecond.
    floor = 2 * ms / 1000 / 8 * 0.9
    peers = {f"{cluster.member_id(n):x}" for n in others(target)}
    assert set(rtt) == peers
    for peer, (total, count) in rtt.items():
        assert total / count >= floor, (peer, total, count)
    await fault.clear()
    assert cluster.peer_links.state()[target]["latency_ms"] == 0


async def test_quota_fill_raises_nospace_and_only_remediation_fixes_it(cluster: EtcdCluster):
    client = cluster.client("member-1")
    assert await client.alarms() == []
    fault = cluster.make_fault("quota_fill", None, {})
    assert isinstance(fault, QuotaFill)
    started = time.monotonic()
    await fault.inject()
    print(
        f"\nquota_fill: NOSPACE at {QUOTA >> 20} MiB after {time.monotonic() - started:.2f} s "
        f"({fault.result})"
    )
    alarms = await client.alarms()
    assert alarms and {a.alarm for a in alarms} == {"NOSPACE"}
    assert fault.result["writes"] * fault.value_bytes >= QUOTA * 0.5
    # The member that raised the alarm is at its quota (the others may still be applying).
    alarmed = fault.result["alarmed_members"][0]
    assert (await cluster.client(alarmed).status()).db_size >= QUOTA * 0.9
    status = await client.status()
    with pytest.raises(EtcdError, match="database space exceeded") as refused:
        await client.put("quota/after", "x")
    assert getattr(refused.value, "no_space", False)
    await fault.clear()
    # Clearing stopped the writer; etcd is still full and still refuses writes.
    assert await client.alarms()
    with pytest.raises(EtcdError, match="database space exceeded"):
        await client.put("quota/after-clear", "x")
    await remediate_nospace(cluster)
    assert (await client.status()).db_size < QUOTA // 2
    assert (await client.put("quota/after-remediation", "x")).revision > status.revision


# -------------------------------------------------------------------------- lifecycle


def children_running_in(run_dir: Path) -> list[int]:
    """Our child processes whose command line names `run_dir` (this lab's members)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if str(run_dir) in " ".join(child.cmdline()):
                found.append(child.pid)
        except psutil.Error:
            continue
    return found


@pytest.mark.asyncio(loop_scope="function")
async def test_stop_leaves_no_process_even_after_kills_pauses_and_restarts(tmp_path: Path):
    lab = EtcdCluster(tmp_path, members=3, binary=etcd_or_skip())
    await lab.start()
    try:
        pids = [lab.supervisor.pid(n) for n in lab.member_names]
        lab.kill_member("member-1")
        await lab.restart_member("member-1")
        lab.pause_member("member-2")
        pids.append(lab.supervisor.pid("member-1"))
        children = {p.pid for p in psutil.Process().children(recursive=True)}
        assert set(pids[1:]) <= children
    finally:
        await lab.stop()
    assert not lab.running
    alive = [pid for pid in pids if psutil.pid_exists(pid)]
    assert alive == [], f"survivors: {alive}"
    assert children_running_in(tmp_path) == []


@pytest.mark.asyncio(loop_scope="function")
async def test_a_member_that_cannot_start_fails_the_start_cleanly(tmp_path: Path):
    real = etcd_or_skip()
    lab = EtcdCluster(tmp_path, members=3, binary=real, heartbeat_ms=100, election_ms=1000)
    lab.heartbeat_ms = 0  # etcd refuses a zero heartbeat and exits
    with pytest.raises(ProcessStartError, match=r"'member-\d'.*exited with code") as info:
        await lab.start()
    assert "heartbeat" in str(info.value).lower()  # the log tail says why
    assert not lab.running
    assert [n for n in lab.supervisor.names() if lab.supervisor.status(n) == "running"] == []
    assert children_running_in(tmp_path) == []
    async with EtcdClient(lab.client_url("member-1"), timeout=0.5) as client:
        with pytest.raises(EtcdUnavailableError, match="is the member running"):
            await client.status()


@pytest.mark.asyncio(loop_scope="function")
async def test_five_members_start_every_one_answers_and_two_may_die(tmp_path: Path):
    lab = EtcdCluster(tmp_path, members=5, binary=etcd_or_skip())
    names = [f"member-{i}" for i in range(1, 6)]
    await lab.start()
    try:
        assert lab.member_names == names
        assert lab.startup_s is not None and lab.startup_s < lab.start_timeout
        ends = lab.endpoints()
        assert sorted(ends["members"]) == names
        assert len({m["pid"] for m in ends["members"].values()}) == 5
        for name in names:
            revision = await put_via(lab, name, f"five/{name}", name)
            got = await lab.client(name).get(f"five/{name}")
            assert got is not None and got.value == name and got.mod_revision == revision
        listed = await lab.client("member-4").member_list()
        assert sorted(m.name for m in listed) == names
        statuses = await lab.statuses()
        assert all(s is not None for s in statuses.values())
        assert len({s.leader for s in statuses.values() if s is not None}) == 1
        # One raft group of five: a quorum of three still commits with two members gone.
        leader = await lab.leader()
        dead = [n for n in names if n != leader][:2]
        for name in dead:
            lab.kill_member(name)
        survivor = next(n for n in names if n not in dead and n != leader)
        assert await put_via(lab, survivor, "five/after-two-kills", "yes", timeout=5.0) > 0
    finally:
        await lab.stop()
    assert children_running_in(tmp_path) == []
