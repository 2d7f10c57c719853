"""The etcd clients as a lab process of their own: a pid apart from the console, samples every
second, windows per member and ledger checks over their API, a password that never shows, and
nothing left running once the lab stops."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import pytest_asyncio

from operator_console.lab.etcd.binary import EtcdBinaryError, find_etcd
from operator_console.lab.etcd.client import EtcdClient
from operator_console.lab.etcd.clients_host import CLIENTS
from operator_console.lab.etcd.cluster import EtcdCluster

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

PASSWORD = "clients-Pa55-6e1f"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EtcdCluster]:
    try:
        binary = find_etcd()
    except EtcdBinaryError as exc:
        pytest.skip(str(exc))
    lab = EtcdCluster(tmp_path_factory.mktemp("etcd-clients"), members=3, binary=binary)
    await lab.start()
    try:
        yield lab
    finally:
        await lab.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def api(cluster: EtcdCluster) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30.0, trust_env=False) as http:
        yield http
    await cluster.stop_clients()


async def start(cluster: EtcdCluster, prefix: str, **overrides: Any) -> str:
    options: dict[str, Any] = {
        "rate": 60.0,
        "mix": {"put": 0.5, "get": 0.4, "delete": 0.1},
        "keys": 50,
        "prefix": prefix,
        "timeout_s": 1.0,
        "check_every_s": 0.5,
        "warm_up_s": 0.5,
        "seed": 7,
        **overrides,
    }
    return await cluster.start_clients(**options)


async def until(probe: Callable[[], Awaitable[Any]], what: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await probe()
        if found:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for: {what}")


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def test_the_clients_run_as_their_own_process_and_report_over_their_api(
    cluster: EtcdCluster, api: httpx.AsyncClient
):
    url = await start(cluster, "own-process/")
    pid = cluster.endpoints()["clients"]["pid"]
    assert cluster.endpoints()["clients"]["url"] == url
    assert pid != os.getpid() and psutil.Process(pid).ppid() == os.getpid()
    assert os.getpgid(pid) == pid  # a process group of its own, signalled as one by the lab
    assert "operator_console.lab.etcd.clients" in psutil.Process(pid).cmdline()

    async def samples(after: int = 0) -> list[dict[str, Any]]:
        return (await api.get(f"{url}/api/samples", params={"after": after})).json()["samples"]

    three = await until(lambda: _at_least(samples, 3), "three samples")
    assert [s["seq"] for s in three] == sorted(s["seq"] for s in three)
    gaps = [
        (datetime.fromisoformat(b["at"]) - datetime.fromisoformat(a["at"])).total_seconds()
        for a, b in itertools.pairwise(three)
    ]
    assert all(0.5 < gap < 2.0 for gap in gaps), gaps  # one a second
    busy = three[-1]
    assert busy["puts_per_s"] > 5 and busy["acknowledged_writes"] > 0
    assert busy["leader"] == await cluster.leader()
    later = await samples(after=busy["seq"])
    assert all(s["seq"] > busy["seq"] for s in later)

    # Per member over the last seconds: every member served a share (round robin).
    window = (await api.get(f"{url}/api/window", params={"seconds": 3})).json()
    assert set(window["window"]["per_member"]) == set(cluster.member_names)
    assert all(m["ops"] > 0 for m in window["window"]["per_member"].values())
    assert window["window"]["p99_ms"] >= window["window"]["p50_ms"] > 0

    # The ledger check runs in the clients, while traffic runs, and shows on samples too.
    check = (await api.post(f"{url}/api/check")).json()
    assert check["error"] is None and check["lost"] == [] and check["checked"] > 0
    checked = await until(
        lambda: _with_check(samples, busy["seq"]), "a sample that carries a ledger check"
    )
    assert checked["check"]["checked"] > 0 and checked["check"]["lost"] == []

    # adjust: the rate goes to 0 and the samples show it.
    answer = await api.put(f"{url}/api/traffic", json={"rate": 0})
    assert answer.json()["rate"] == 0
    bad = await api.put(f"{url}/api/traffic", json={"mix": {"scan": 1}})
    assert bad.status_code == 400 and "unknown operations" in bad.json()["error"]
    await until(lambda: _idle(api, url), "no request in flight")
    seq = (await samples())[-1]["seq"]
    # The first sample after may still count requests that ended before; the second may not.
    quiet = await until(lambda: _at_least(lambda: samples(seq), 2), "two samples after the stop")
    assert quiet[-1]["puts_per_s"] == quiet[-1]["gets_per_s"] == 0

    # A real delete behind the clients' back: their own check reports exactly that write.
    acks = (await api.get(f"{url}/api/ledger")).json()["acks"]
    key = next(k for k, a in acks.items() if a["kind"] == "put")
    await cluster.client("member-1").delete(key)
    lost = (await api.post(f"{url}/api/check")).json()["lost"]
    assert [(w["key"], w["kind"], w["found_value"]) for w in lost] == [(key, "put", None)]

    # The final read-back after the traffic stops: the same loss, and the count of writes.
    final = (await api.post(f"{url}/api/stop")).json()
    assert [w["key"] for w in final["lost"]] == [key]
    assert final["acknowledged"] >= busy["acknowledged_writes"]
    assert (await api.post(f"{url}/api/stop")).json()["lost"] == final["lost"]  # once

    await cluster.stop_clients()
    assert not alive(pid)
    assert "clients" not in cluster.endpoints()


async def test_a_password_reaches_the_clients_through_a_file_they_delete(
    cluster: EtcdCluster, api: httpx.AsyncClient
):
    admin = EtcdClient(cluster.client_url("member-1"))
    root = EtcdClient(cluster.client_url("member-1"), username="root", password=PASSWORD)
    await admin.call("/auth/role/add", {"name": "root"})
    await admin.call("/auth/user/add", {"name": "root", "password": PASSWORD})
    await admin.call("/auth/user/grant", {"user": "root", "role": "root"})
    await admin.call("/auth/enable", {})
    try:
        url = await start(cluster, "with-auth/", credentials=("root", PASSWORD))
        pid = cluster.endpoints()["clients"]["pid"]
        health = await until(
            lambda: _acknowledged(api, url, 20), "writes acknowledged as root", timeout=20
        )
        assert health["acknowledged"] >= 20
        process = psutil.Process(pid)
        assert not any(PASSWORD in arg for arg in process.cmdline())
        assert not any(PASSWORD in value for value in process.environ().values())
        final = (await api.post(f"{url}/api/stop")).json()
        assert final["error"] is None and final["lost"] == []
        await cluster.stop_clients()
    finally:
        await root.call("/auth/disable", {})
        await root.aclose()
        await admin.aclose()
    # Nowhere on disk: not the run folder's files (the logs, the clients' file is gone).
    for path in Path(cluster.run_dir).rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000 and ".etcd" not in str(path):
            assert PASSWORD not in path.read_text(errors="replace"), path
    assert not list(Path(cluster.run_dir).glob(".clients-auth-*"))


async def test_the_clients_stop_with_the_lab_and_leave_nothing(tmp_path: Path):
    lab = EtcdCluster(tmp_path, members=1, binary=find_etcd())
    await lab.start()
    try:
        await start(lab, "with-the-lab/", warm_up_s=0.0)
        pid = lab.endpoints()["clients"]["pid"]
        members = [m["pid"] for m in lab.endpoints()["members"].values()]
        assert alive(pid) and lab.supervisor.status(CLIENTS) == "running"
    finally:
        await lab.stop()
    assert not alive(pid)
    assert not any(alive(p) for p in members)
    assert lab.supervisor.log_path(CLIENTS).is_file()  # its log stays in the run folder


async def _at_least(
    read: Callable[[], Awaitable[list[dict[str, Any]]]], count: int
) -> list[dict[str, Any]] | None:
    found = await read()
    return found if len(found) >= count else None


async def _with_check(
    read: Callable[..., Awaitable[list[dict[str, Any]]]], after: int
) -> dict[str, Any] | None:
    return next((s for s in await read(after) if s.get("check")), None)


async def _idle(api: httpx.AsyncClient, url: str) -> bool:
    health = (await api.get(f"{url}/api/health")).json()
    return bool(health["rate"] == 0 and health["in_flight"] == 0)


async def _acknowledged(api: httpx.AsyncClient, url: str, count: int) -> dict[str, Any] | None:
    health = (await api.get(f"{url}/api/health")).json()
    return health if health["acknowledged"] >= count else None
