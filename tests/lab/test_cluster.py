"""A real 3-node cluster: every fault has its real effect, and the limit holds under concurrency."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import pytest_asyncio

from operator_console.lab.ratelimiter.cluster import RateLimiterCluster
from operator_console.lab.ratelimiter.faults import FAULT_KINDS
from operator_console.lab.supervisor import ProcessStartError

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

WINDOW_MS = 2000
DEFAULT_LIMIT = 100
REFRESH_S = 0.3


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RateLimiterCluster]:
    lab = RateLimiterCluster(
        tmp_path_factory.mktemp("cluster"),
        nodes=3,
        default_limit=DEFAULT_LIMIT,
        window_ms=WINDOW_MS,
        config_refresh_s=REFRESH_S,
        heartbeat_s=0.5,
    )
    await lab.start()
    try:
        yield lab
    finally:
        await lab.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def http() -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    async with httpx.AsyncClient(timeout=3.0, limits=limits, trust_env=False) as client:
        yield client


@pytest_asyncio.fixture(autouse=True, loop_scope="module")
async def healthy_afterwards(
    cluster: RateLimiterCluster, http: httpx.AsyncClient
) -> AsyncIterator[None]:
    """Put the cluster back to clean after each test so one failure does not cascade."""
    yield
    if cluster.store_status() == "paused":
        cluster.resume_store()
    for name in cluster.node_names:
        await cluster.proxy(name).restore()
        status = cluster.node_status(name)
        if status == "paused":
            cluster.resume_node(name)
        elif status != "running":
            await cluster.restart_node(name)
        for failpoint in ("clock_skew_ms", "config_refresh_stuck"):
            await http.delete(f"{cluster.node_url(name)}/api/failpoints/{failpoint}")
    await eventually(lambda: all_healthy(cluster, http), "cluster healthy again")


async def eventually(probe: Callable[[], Awaitable[bool]], what: str, timeout: float = 8.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await probe():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for: {what}")


async def health(http: httpx.AsyncClient, url: str, timeout: float = 3.0) -> httpx.Response:
    return await http.get(f"{url}/api/health", timeout=timeout)


async def all_healthy(cluster: RateLimiterCluster, http: httpx.AsyncClient) -> bool:
    try:
        answers = [await health(http, cluster.node_url(n), 1.0) for n in cluster.node_names]
    except httpx.HTTPError:
        return False
    return all(r.status_code == 200 for r in answers)


async def store_reachable(http: httpx.AsyncClient, url: str) -> bool | None:
    try:
        response = await health(http, url)
    except httpx.HTTPError:
        return None
    reachable: bool = response.json()["store"]["reachable"]
    return reachable


def reaches_store(http: httpx.AsyncClient, url: str) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return await store_reachable(http, url) is True

    return probe


async def limits_of(http: httpx.AsyncClient, url: str) -> dict[str, Any]:
    response = await http.get(f"{url}/api/limits")
    response.raise_for_status()
    data: dict[str, Any] = response.json()
    return data


async def timed_check(http: httpx.AsyncClient, url: str, key: str) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    response = await http.post(f"{url}/check", json={"key": key, "cost": 1})
    return time.perf_counter() - started, response.json()


def others(cluster: RateLimiterCluster, target: str) -> list[str]:
    return [n for n in cluster.node_names if n != target]


# ------------------------------------------------------------------------- topology


async def test_store_and_three_nodes_run_each_behind_its_own_proxy(
    cluster: RateLimiterCluster, http: httpx.AsyncClient
):
    ends = cluster.endpoints()
    assert ends["store"]["url"] == f"redis://127.0.0.1:{cluster.store.port}"
    assert psutil.pid_exists(ends["store"]["pid"])
    assert sorted(ends["nodes"]) == ["node-1", "node-2", "node-3"]
    proxy_ports = {info["proxy_port"] for info in ends["nodes"].values()}
    assert len(proxy_ports) == 3 and cluster.store.port not in proxy_ports
    for name, info in ends["nodes"].items():
        assert info["url"] == cluster.node_url(name)
        assert psutil.pid_exists(info["pid"])
        response = await health(http, info["url"])
        assert response.status_code == 200, response.text
        assert response.json()["store"]["reachable"] is True
        # The node's store traffic really flows through its own proxy.
        assert (await cluster.proxy(name).state())["connections"] >= 1
        assert cluster.proxy(name).port == info["proxy_port"]
    assert cluster.node_status("node-1") == "running"
    assert cluster.store_status() == "running"


async def test_fault_catalogue_and_validation(cluster: RateLimiterCluster):
    assert list(cluster.fault_kinds()) == [
        "node_kill",
        "node_pause",
        "store_pause",
        "link_latency",
        "link_cut",
        "clock_skew",
        "config_stuck",
    ]
    assert tuple(cluster.fault_kinds()) == FAULT_KINDS
    for kind in FAULT_KINDS:
        fault = cluster.make_fault(kind, None, {})
        assert fault.kind == kind
        assert fault.target == ("store" if kind == "store_pause" else "node-2")
        assert fault.describe()
    with pytest.raises(ValueError, match=r"unknown fault kind 'meteor'.*node_kill.*config_stuck"):
        cluster.make_fault("meteor", None, {})
    with pytest.raises(ValueError, match=r"'node-9'.*node-1, node-2, node-3"):
        cluster.make_fault("node_kill", "node-9", {})
    with pytest.raises(ValueError, match="valid targets: store"):
        cluster.make_fault("store_pause", "node-1", {})
    with pytest.raises(ValueError, match="'node_kill' has no parameter 'ms'"):
        cluster.make_fault("node_kill", "node-1", {"ms": 5})
    with pytest.raises(ValueError, match="'ms' must be a number"):
        cluster.make_fault("link_latency", "node-1", {"ms": "slow"})
    assert "250 ms" in cluster.make_fault("link_latency", "node-3", {"ms": 250}).describe()
    assert cluster.make_fault("clock_skew", "node-1", {}).params == {}
    assert f"{3 * WINDOW_MS} ms ahead" in cluster.make_fault("clock_skew", "node-1", {}).describe()


# --------------------------------------------------------------------------- faults


async def test_node_kill_refuses_connections_until_cleared(
    cluster: RateLimiterCluster, http: httpx.AsyncClient
):
    fault = cluster.make_fault("node_kill", "node-2", {})
    url = cluster.node_url("node-2")
    old_pid = cluster.supervisor.pid("node-2")
    await fault.inject()
    assert cluster.node_status("node-2") == "killed"
    assert not psutil.pid_exists(old_pid)
    with pytest.raises(httpx.ConnectError):
        await health(http, url)
    assert (await health(http, cluster.node_url("node-1"))).status_code == 200
    await fault.clear()
    assert cluster.node_status("node-2") == "running"
    assert cluster.supervisor.pid("node-2") != old_pid
    assert (await health(http, url)).status_code in (200, 503)
    await fault.clear()  # clearing twice is harmless
    assert cluster.endpoints()["nodes"]["node-2"]["url"] == url  # same port


async def test_node_pause_makes_health_time_out(
    cluster: RateLimiterCluster, http: httpx.AsyncClient
):
    fault = cluster.make_fault("node_pause", "node-3", {})
    await fault.inject()
    assert cluster.node_status("node-3") == "paused"
    assert psutil.Process(cluster.supervisor.pid("node-3")).status() == psutil.STATUS_STOPPED
    with pytest.raises(httpx.TimeoutException):
        await health(http, cluster.node_url("node-3"), timeout=0.5)
    assert (await health(http, cluster.node_url("node-1"))).status_code == 200
    await fault.clear()
    assert cluster.node_status("node-3") == "running"
    assert (await health(http, cluster.node_url("node-3"))).status_code == 200
    await fault.clear()


async def test_store_pause_makes_every_node_report_the_store_unreachable(
    cluster: RateLimiterCluster, http: httpx.AsyncClient
):
    fault = cluster.make_fault("store_pause", None, {})
    await fault.inject()
    assert cluster.store_status() == "paused"
    for name in cluster.node_names:
        response = await health(http, cluster.node_url(name))
        assert response.status_code == 503
        assert response.json()["store"]["reachable"] is False
    await fault.clear()
    assert cluster.store_status() == "running"
    for name in cluster.node_names:
        url = cluster.node_url(name)
        await eventually(reaches_store(http, url), f"{name} reaches the store")
    await fault.clear()


async def test_link_latency_slows_checks_on_that_node_only(
    cluster: RateLimiterCluster, http: httpx.AsyncClient
):
    # 100 ms each way stays under the node's 250 ms store timeout, so checks stay synced.
    fault = cluster.make_fault("link_latency", "node-1", {"ms": 100})
    await fault.inject()
    assert (await cluster.proxy("node-1").state())["latency_ms"] == 100
    slow = [await timed_check(http, cluster.node_url("node-1"), "lat:a") for _ in range(3)]
    fast = [await timed_check(http, cluster.node_url("node-2"), "lat:a") for _ in range(3)]
    assert all(body["synced"] for _, body in slow + fast)
    assert min(t for t, _ in slow) >= 0.2  # one store round trip: 100 ms up + 100 ms down
    assert statistics.median(t for t, _ in fast) < 0.5 * min(t for t, _ in slow)
    await fault.clear()
    assert (await cluster.proxy("node-1").state())["latency_ms"] == 0
    healed = [await timed_check(http, cluster.node_url("node-1"), "lat:b") for _ in range(3)]
    assert statistics.median(t for t, _ in healed) < 0.2


async def test_link_cut_isolates_one_node_from_the_store(
    cluster: RateLimiterCluster, http: httpx.AsyncClient
):
    fault = cluster.make_fault("link_cut", "node-2", {})
    await fault.inject()
    assert (await cluster.proxy("node-2").state())["cut"] is True
    assert await store_reachable(http, cluster.node_url("node-2")) is False
    for name in others(cluster, "node-2"):
        assert await store_reachable(http, cluster.node_url(name)) is True
    _, body = await timed_check(http, cluster.node_url("node-2"), "cut:a")
    assert body["synced"] is False  # fail-open: allowed without the shared count
    await fault.clear()
    url = cluster.node_url("node-2")
    await eventually(reaches_store(http, url), "node-2 reconnects")


async def test_clock_skew_sets_the_failpoint_on_the_target_only(
    cluster: RateLimiterCluster, http: httpx.AsyncClient
):
    fault = cluster.make_fault("clock_skew", "node-3", {})
    await fault.inject()
    for name in cluster.node_names:
        failpoints = (await http.get(f"{cluster.node_url(name)}/api/failpoints")).json()
        expected = 3 * WINDOW_MS if name == "node-3" else 0
        assert failpoints["clock_skew_ms"] == expected, name
    await fault.clear()
    failpoints = (await http.get(f"{cluster.node_url('node-3')}/api/failpoints")).json()
    assert failpoints["clock_skew_ms"] == 0


async def test_clearing_a_failpoint_after_the_node_restarted_does_not_crash(
    cluster: RateLimiterCluster, http: httpx.AsyncClient
):
    fault = cluster.make_fault("clock_skew", "node-1", {"ms": 1234})
    await fault.inject()
    await cluster.restart_node("node-1")
    await fault.clear()
    cluster.kill_node("node-1")
    await fault.clear()  # node down: nothing to clear, and no error
    await cluster.make_fault("config_stuck", "node-1", {}).clear()


async def test_config_stuck_leaves_the_target_on_the_old_limits(
    cluster: RateLimiterCluster, http: httpx.AsyncClient
):
    fault = cluster.make_fault("config_stuck", "node-2", {})
    assert fault.describe().startswith("freeze node-2")
    await fault.inject()
    expected = {"limit": DEFAULT_LIMIT // 2, "window_ms": WINDOW_MS}

    async def others_updated() -> bool:
        for name in others(cluster, "node-2"):
            limits = await limits_of(http, cluster.node_url(name))
            if limits["limits"].get("user:hot") != expected:
                return False
        return True

    await eventually(others_updated, "node-1 and node-3 see the new limit")
    await asyncio.sleep(3 * REFRESH_S)  # several refresh periods: node-2 still must not see it
    stuck = await limits_of(http, cluster.node_url("node-2"))
    fresh = await limits_of(http, cluster.node_url("node-1"))
    assert stuck["limits"].get("user:hot") != expected
    assert stuck["version"] < fresh["version"]
    await fault.clear()
    healed = await limits_of(http, cluster.node_url("node-2"))
    assert healed["limits"].get("user:hot") == expected
    assert healed["version"] == fresh["version"]


# ---------------------------------------------------------------------- acceptance


async def _burst(
    cluster: RateLimiterCluster, key: str, total: int, in_flight: int
) -> tuple[int, float, list[dict[str, Any]]]:
    """Fire `total` checks with `in_flight` workers, each bound to one node in turn.

    One single-connection client per worker: httpcore's pool gets slow with dozens of
    connections in one client, which would stretch the burst past the window.
    """
    urls = [cluster.node_url(n) for n in cluster.node_names]
    clients = [
        httpx.AsyncClient(
            base_url=urls[w % len(urls)],
            timeout=5.0,
            verify=False,
            trust_env=False,
            limits=httpx.Limits(max_connections=1),
        )
        for w in range(in_flight)
    ]
    todo = iter(range(total))
    bodies: list[dict[str, Any]] = []

    async def worker(client: httpx.AsyncClient) -> None:
        for _ in todo:
            response = await client.post("/check", json={"key": key, "cost": 1})
            assert response.status_code in (200, 429), response.text
            bodies.append(response.json())

    started = time.monotonic()
    try:
        await asyncio.gather(*(worker(c) for c in clients))
    finally:
        elapsed = time.monotonic() - started
        for client in clients:
            await client.aclose()
    return sum(1 for b in bodies if b["allowed"]), elapsed, bodies


async def test_concurrent_checks_across_three_nodes_never_exceed_the_limit(
    cluster: RateLimiterCluster, http: httpx.AsyncClient
):
    # The window is long enough that a 300-request burst on a busy 2-core machine fits in it.
    key, limit, window_ms = "acceptance:burst", 50, 4000
    response = await http.put(
        f"{cluster.node_url('node-1')}/api/limits/{key}",
        json={"limit": limit, "window_ms": window_ms},
    )
    assert response.status_code == 200, response.text

    async def everyone_knows() -> bool:
        for name in cluster.node_names:
            rule = (await limits_of(http, cluster.node_url(name)))["limits"].get(key)
            if rule != {"limit": limit, "window_ms": window_ms}:
                return False
        return True

    await eventually(everyone_knows, "all nodes load the new limit")

    for round_no in (1, 2):
        allowed, elapsed, bodies = await _burst(cluster, key, total=300, in_flight=60)
        assert elapsed < window_ms / 1000, f"round {round_no} burst outlasted one window"
        assert all(b["synced"] for b in bodies), "every answer came from the shared count"
        assert len(bodies) == 300
        per_node = Counter(b["node"] for b in bodies)
        assert set(per_node) == set(cluster.node_names)
        assert min(per_node.values()) >= 60, per_node  # spread over all three nodes
        assert 0 < allowed <= limit, f"round {round_no}: {allowed} allowed, limit {limit}"
        assert allowed == limit  # a healthy cluster grants the full window, no more
        if round_no == 1:
            await asyncio.sleep(window_ms / 1000 + 0.2)  # let every entry leave the window


# ------------------------------------------------------------------------ lifecycle


@pytest.mark.asyncio(loop_scope="function")
async def test_stop_leaves_no_child_even_after_restarts(tmp_path: Path):
    lab = RateLimiterCluster(tmp_path, nodes=2, config_refresh_s=REFRESH_S, heartbeat_s=0.5)
    await lab.start()
    try:
        pids = [lab.supervisor.pid(n) for n in lab.supervisor.names()]
        old_store_port = lab.store.port
        await lab.restart_store()
        assert lab.store.port == old_store_port
        lab.kill_node("node-1")
        await lab.restart_node("node-1")
        lab.pause_node("node-2")
        lab.pause_store()
        pids += [lab.supervisor.pid(n) for n in lab.supervisor.names()]
        me = psutil.Process()
        assert {p.pid for p in me.children(recursive=True)} >= set(
            lab.supervisor.pid(n) for n in lab.supervisor.names()
        )
    finally:
        await lab.stop()
    assert not lab.running
    alive = [pid for pid in pids if psutil.pid_exists(pid)]
    assert alive == [], f"survivors: {alive}"
    assert {lab.supervisor.status(n) for n in lab.supervisor.names()} <= {"stopped", "killed"}


@pytest.mark.asyncio(loop_scope="function")
async def test_a_node_that_cannot_start_fails_the_cluster_start_cleanly(tmp_path: Path):
    lab = RateLimiterCluster(tmp_path, nodes=1)
    lab.fail_mode = "sideways"  # the node's CLI rejects it and exits
    with pytest.raises(ProcessStartError, match=r"'node-1'.*exited with code 2") as info:
        await lab.start()
    assert "--fail-mode" in str(info.value)  # the log tail explains why
    assert [n for n in lab.supervisor.names() if lab.supervisor.status(n) == "running"] == []
