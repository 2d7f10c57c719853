"""The JSON-gateway client against real etcd members: every call, its fields and its errors."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from operator_console.lab.etcd.binary import EtcdBinaryError, find_etcd
from operator_console.lab.etcd.client import (
    EtcdAuthError,
    EtcdClient,
    EtcdRequestError,
    EtcdResponseError,
    EtcdUnavailableError,
    prefix_end,
)
from operator_console.lab.etcd.cluster import EtcdCluster
from operator_console.lab.ports import free_port

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EtcdCluster]:
    try:
        binary = find_etcd()
    except EtcdBinaryError as exc:
        pytest.skip(str(exc))
    lab = EtcdCluster(tmp_path_factory.mktemp("etcd-client"), members=3, binary=binary)
    await lab.start()
    try:
        yield lab
    finally:
        await lab.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def client(cluster: EtcdCluster) -> AsyncIterator[EtcdClient]:
    async with EtcdClient(cluster.client_url("member-1")) as one:
        yield one


async def test_prefix_end_follows_etcds_rule():
    assert prefix_end("a/") == b"a0"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") == b"\x00"


async def test_put_get_range_and_delete_round_trip(client: EtcdClient, cluster: EtcdCluster):
    first = await client.put("kv/a", "één")
    second = await client.put("kv/b", "two", prev_kv=True)
    assert second.revision == first.revision + 1 and second.prev_kv is None
    again = await client.put("kv/b", "deux", prev_kv=True)
    assert again.prev_kv is not None and again.prev_kv.value == "two"
    await client.put("kv0", "outside the prefix")  # '0' is the byte after '/'
    raw = "bytes-\udcff"  # a value that is not UTF-8 on the wire
    await client.put("kv/raw", raw)

    got = await client.get("kv/b")
    assert got is not None
    assert (got.key, got.value, got.version) == ("kv/b", "deux", 2)
    assert got.create_revision == second.revision and got.mod_revision == again.revision
    assert (await client.get("kv/a")).value == "één"  # type: ignore[union-attr]
    assert (await client.get("kv/raw")).value == raw  # type: ignore[union-attr]
    assert await client.get("kv/missing") is None

    # A write through one member is read through another, serializable or not.
    other = cluster.client("member-3")
    assert (await other.get("kv/b")).value == "deux"  # type: ignore[union-attr]
    local = await other.get("kv/b", serializable=True)
    assert local is not None and local.mod_revision <= again.revision

    listed = await client.range("kv/", prefix=True)
    assert [kv.key for kv in listed.kvs] == ["kv/a", "kv/b", "kv/raw"]
    assert listed.count == 3 and listed.revision >= again.revision
    keys_only = await client.range("kv/", prefix=True, keys_only=True)
    assert [kv.value for kv in keys_only.kvs] == ["", "", ""]
    counted = await client.range("kv/", prefix=True, count_only=True)
    assert counted.count == 3 and counted.kvs == []
    limited = await client.range("kv/", prefix=True, limit=2)
    assert len(limited.kvs) == 2 and limited.more
    old = await client.range("kv/b", revision=second.revision)
    assert old.kvs[0].value == "two"

    nothing = await client.delete("kv/missing")
    assert nothing.deleted == 0 and nothing.revision == listed.revision
    removed = await client.delete("kv/", prefix=True, prev_kv=True)
    assert removed.deleted == 3 and removed.revision == listed.revision + 1
    assert {kv.key for kv in removed.prev_kvs} == {"kv/a", "kv/b", "kv/raw"}
    assert (await client.range("kv/", prefix=True)).kvs == []
    assert await client.get("kv0") is not None


async def test_status_member_list_health_and_metrics(client: EtcdClient, cluster: EtcdCluster):
    status = await client.status()
    assert status.member_id == cluster.member_id("member-1")
    assert status.version == cluster.binary.version
    leader = await cluster.leader()
    assert leader is not None and status.leader == cluster.member_id(leader)
    assert status.is_leader == (leader == "member-1")
    assert status.raft_term >= 2
    assert 0 < status.raft_applied_index <= status.raft_index
    assert status.db_size >= status.db_size_in_use > 0
    assert status.revision >= 1 and status.cluster_id != 0

    members = await client.member_list()
    assert sorted(m.name for m in members) == cluster.member_names
    for member in members:
        assert member.client_urls == (cluster.client_url(member.name),)
        assert member.peer_urls == (cluster.peer_url(member.name),)
        assert member.id_hex == f"{cluster.member_id(member.name):x}"
        assert not member.is_learner

    health = await client.health()
    assert health.healthy
    metrics = await client.metrics()
    assert "etcd_server_has_leader 1" in metrics


async def test_compact_and_defragment(client: EtcdClient, cluster: EtcdCluster):
    first = await client.put("compact/k", "1")
    latest = (await client.put("compact/k", "2")).revision
    await client.compact(latest)
    with pytest.raises(EtcdRequestError, match="compacted") as info:
        await client.range("compact/k", revision=first.revision)
    assert info.value.code == 11 and client.endpoint in str(info.value)
    with pytest.raises(EtcdRequestError, match="future revision"):
        await client.compact(latest + 1000)
    for name in cluster.member_names:
        await cluster.client(name).defragment()
        status = await cluster.client(name).status()
        assert status.db_size >= status.db_size_in_use
    assert await client.alarms() == []
    assert await client.disarm() == []


async def test_move_leader_hands_leadership_to_the_target(cluster: EtcdCluster):
    leader = await cluster.leader()
    assert leader is not None
    target = next(n for n in cluster.member_names if n != leader)
    bystander = next(n for n in cluster.member_names if n not in (leader, target))
    with pytest.raises(EtcdRequestError, match="not leader"):
        await cluster.client(bystander).move_leader(cluster.member_id(target))
    await cluster.client(leader).move_leader(cluster.member_id(target))
    deadline = time.monotonic() + 5
    while await cluster.leader() != target:
        assert time.monotonic() < deadline, "leadership never moved"
        await asyncio.sleep(0.05)


async def test_an_unreachable_endpoint_is_named_with_the_fix():
    url = f"http://127.0.0.1:{free_port()}"
    async with EtcdClient(url, timeout=1.0) as nobody:
        with pytest.raises(EtcdUnavailableError, match="is the member running") as info:
            await nobody.put("k", "v")
    assert url in str(info.value) and info.value.endpoint == url
    assert info.value.maybe_sent is False  # refused: the write surely never arrived


async def test_a_url_that_is_not_an_etcd_client_url_gives_a_clear_error(cluster: EtcdCluster):
    # The peer port serves raft over HTTP, not the JSON gateway.
    peer = cluster.peer_url("member-2")
    async with EtcdClient(peer) as wrong:
        with pytest.raises(EtcdResponseError, match="is this an etcd client URL") as info:
            await wrong.status()
        assert peer in str(info.value)
        with pytest.raises(EtcdResponseError, match=r"/health"):
            await wrong.health()


async def test_user_and_password_auth_uses_the_gateway_token(cluster: EtcdCluster):
    url = cluster.client_url("member-2")
    password = "s3cret-Pa55"
    admin = EtcdClient(url)
    await admin.call("/auth/role/add", {"name": "root"})
    await admin.call("/auth/user/add", {"name": "root", "password": password})
    await admin.call("/auth/user/grant", {"user": "root", "role": "root"})
    await admin.call("/auth/enable", {})
    root = EtcdClient(url, username="root", password=password)
    try:
        with pytest.raises(EtcdAuthError, match="user name is empty"):
            await admin.put("auth/anonymous", "no")
        async with EtcdClient(url, username="root", password="wrong-guess") as guesser:
            with pytest.raises(EtcdAuthError, match="authentication failed") as info:
                await guesser.put("auth/guess", "no")
            assert "wrong-guess" not in str(info.value) and "wrong-guess" not in repr(guesser)
        revision = (await root.put("auth/root", "yes")).revision
        assert (await root.get("auth/root")).mod_revision == revision  # type: ignore[union-attr]
        token = root._token
        assert token and token not in repr(root) and password not in repr(root)
        # A token etcd no longer knows is replaced by logging in again, once.
        root._token = "stale.token"
        assert (await root.get("auth/root")) is not None
        assert root._token not in (None, "stale.token")
    finally:
        await root.call("/auth/disable", {})
        await root.aclose()
    assert (await admin.put("auth/open-again", "yes")).revision > 0
    await admin.aclose()


async def test_username_without_password_is_refused():
    with pytest.raises(ValueError, match="both username and password"):
        EtcdClient("http://127.0.0.1:2379", username="root")
