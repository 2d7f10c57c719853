"""The rate limiter node, run as real processes against a real Valkey store."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

if TYPE_CHECKING:
    from conftest import ValkeyServer

pytestmark = pytest.mark.integration

StartNode = Callable[..., str]


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5.0) as client:
        yield client


async def check(http: httpx.AsyncClient, base: str, key: str, cost: int = 1) -> httpx.Response:
    return await http.post(f"{base}/check", json={"key": key, "cost": cost})


async def eventually(
    probe: Callable[[], Awaitable[Any]], timeout: float = 5.0, interval: float = 0.05
) -> Any:
    """Poll ``probe`` until it returns something truthy; fail with the last value otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s (last value: {value!r})")
        await asyncio.sleep(interval)


def metric_samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def sample(samples: dict[Any, float], metric: str, **labels: str) -> float:
    return samples[(metric, frozenset(labels.items()))]


async def test_allows_up_to_the_limit_then_denies_with_429(
    start_node: StartNode, http: httpx.AsyncClient
) -> None:
    node = start_node("n1", default_limit=5, default_window_ms=5000)

    remaining = []
    for _ in range(5):
        resp = await check(http, node, "user:1")
        assert resp.status_code == 200
        body = resp.json()
        assert body["allowed"] is True and body["synced"] is True
        assert body["node"] == "n1" and body["limit"] == 5
        remaining.append(body["remaining"])
    assert remaining == [4, 3, 2, 1, 0]

    denied = await check(http, node, "user:1")
    assert denied.status_code == 429
    body = denied.json()
    assert body["allowed"] is False
    assert body["remaining"] == 0
    assert 0 < body["reset_ms"] <= 5000

    other_key = await check(http, node, "user:2")
    assert other_key.status_code == 200, "limits are per key"

    counters = (await http.get(f"{node}/api/counters")).json()
    assert counters["totals"] == {"allowed": 6, "denied": 1, "unsynced": 0, "error": 0}
    assert counters["keys"]["user:1"] == {"allowed": 5, "denied": 1, "unsynced": 0, "error": 0}


async def test_cost_counts_several_requests_and_never_overdraws(
    start_node: StartNode, http: httpx.AsyncClient
) -> None:
    node = start_node("n1", default_limit=5, default_window_ms=5000)

    assert (await check(http, node, "k", cost=3)).json()["remaining"] == 2
    too_big = await check(http, node, "k", cost=3)
    assert too_big.status_code == 429
    assert too_big.json()["remaining"] == 2
    assert (await check(http, node, "k", cost=2)).json()["remaining"] == 0


async def test_window_slides_so_requests_are_allowed_again(
    start_node: StartNode, http: httpx.AsyncClient
) -> None:
    node = start_node("n1", default_limit=2, default_window_ms=1000)
    for _ in range(2):
        assert (await check(http, node, "k")).status_code == 200
    denied = await check(http, node, "k")
    assert denied.status_code == 429

    await asyncio.sleep(denied.json()["reset_ms"] / 1000 + 0.1)
    assert (await check(http, node, "k")).status_code == 200


async def test_counter_reset_clears_the_window(
    start_node: StartNode, http: httpx.AsyncClient
) -> None:
    node = start_node("n1", default_limit=1, default_window_ms=5000)
    assert (await check(http, node, "k")).status_code == 200
    assert (await check(http, node, "k")).status_code == 429

    resp = await http.post(f"{node}/api/counters/k/reset")
    assert resp.json() == {"key": "k", "reset": True}
    assert (await check(http, node, "k")).status_code == 200


async def test_bad_input_is_rejected_with_400(
    start_node: StartNode, http: httpx.AsyncClient
) -> None:
    node = start_node("n1")
    bad_checks: list[Any] = [
        {},
        {"key": ""},
        {"key": 7},
        {"key": "k", "cost": 0},
        {"key": "k", "cost": -1},
        {"key": "k", "cost": "2"},
        {"key": "k", "cost": True},
        ["k"],
    ]
    for body in bad_checks:
        resp = await http.post(f"{node}/check", json=body)
        assert resp.status_code == 400, body
        assert resp.json()["error"]
    not_json = await http.post(f"{node}/check", content=b"key=k")
    assert not_json.status_code == 400

    for body in ({"limit": 0}, {"limit": "5"}, {"limit": 5, "window_ms": 0}, {}):
        resp = await http.put(f"{node}/api/limits/k", json=body)
        assert resp.status_code == 400, body
    bad_skew = await http.put(f"{node}/api/failpoints/clock_skew_ms", json={"value": "soon"})
    assert bad_skew.status_code == 400
    bad_stuck = await http.put(f"{node}/api/failpoints/config_refresh_stuck", json={"value": 1})
    assert bad_stuck.status_code == 400
    unknown = await http.put(f"{node}/api/failpoints/no_such_thing", json={"value": 1})
    assert unknown.status_code == 404
    assert (await http.delete(f"{node}/api/failpoints/no_such_thing")).status_code == 404
    bad_mode = await http.put(f"{node}/api/fail_mode", json={"mode": "ajar"})
    assert bad_mode.status_code == 400

    counters = (await http.get(f"{node}/api/counters")).json()
    assert counters["totals"] == {"allowed": 0, "denied": 0, "unsynced": 0, "error": 0}
    assert (await http.get(f"{node}/api/failpoints")).json() == {
        "clock_skew_ms": 0,
        "config_refresh_stuck": False,
    }


async def test_limit_set_on_one_node_is_enforced_by_another_after_refresh(
    start_node: StartNode, http: httpx.AsyncClient
) -> None:
    a = start_node("a", default_limit=100, default_window_ms=5000)
    b = start_node("b", default_limit=100, default_window_ms=5000)

    put = await http.put(f"{a}/api/limits/tenant", json={"limit": 3})
    assert put.status_code == 200
    written = put.json()
    assert written["key"] == "tenant" and written["limit"] == 3 and written["window_ms"] == 5000
    a_view = (await http.get(f"{a}/api/limits")).json()
    assert a_view["version"] == written["version"]
    assert a_view["limits"]["tenant"] == {"limit": 3, "window_ms": 5000}

    async def b_sees_it() -> bool:
        view = (await http.get(f"{b}/api/limits")).json()
        return view["version"] == written["version"] and "tenant" in view["limits"]

    await eventually(b_sees_it)

    # One window, shared: a spends one request, b gets the remaining two.
    assert (await check(http, a, "tenant")).status_code == 200
    assert [(await check(http, b, "tenant")).status_code for _ in range(3)] == [200, 200, 429]
    assert (await check(http, b, "tenant")).json()["limit"] == 3
    assert (await check(http, b, "other")).json()["limit"] == 100


async def test_two_nodes_together_never_exceed_the_limit(
    start_node: StartNode, http: httpx.AsyncClient
) -> None:
    nodes = [start_node(n, default_limit=10, default_window_ms=10_000) for n in ("a", "b")]

    responses = await asyncio.gather(*(check(http, nodes[i % 2], "shared") for i in range(40)))

    allowed = [r for r in responses if r.status_code == 200]
    assert len(allowed) == 10
    assert all(r.status_code == 429 for r in responses if r.status_code != 200)


async def test_clock_skew_far_ahead_on_one_node_lets_total_exceed_the_limit(
    start_node: StartNode, http: httpx.AsyncClient
) -> None:
    a = start_node("a", default_limit=10, default_window_ms=10_000)
    b = start_node("b", default_limit=10, default_window_ms=10_000)

    skew = await http.put(f"{b}/api/failpoints/clock_skew_ms", json={"value": 600_000})
    assert skew.json()["clock_skew_ms"] == 600_000
    health = (await http.get(f"{b}/api/health")).json()
    assert health["failpoints"]["clock_skew_ms"] == 600_000

    allowed_a = [(await check(http, a, "shared")).status_code for _ in range(10)].count(200)
    allowed_b = [(await check(http, b, "shared")).status_code for _ in range(10)].count(200)

    # b's clock says a's entries are ten minutes old, so it evicts them and starts afresh.
    assert allowed_a == 10
    assert allowed_b == 10
    assert allowed_a + allowed_b > 10
    # and b's entries sit in a's future, so a now refuses although its own requests are gone.
    assert (await check(http, a, "shared")).status_code == 429

    cleared = await http.delete(f"{b}/api/failpoints/clock_skew_ms")
    assert cleared.json()["clock_skew_ms"] == 0


async def test_fail_open_answers_unsynced_while_the_store_is_paused(
    start_node: StartNode, valkey_server: ValkeyServer, http: httpx.AsyncClient
) -> None:
    node = start_node("n1", fail_mode="open")
    assert (await http.get(f"{node}/api/health")).status_code == 200

    valkey_server.pause()
    try:
        started = time.monotonic()
        resp = await check(http, node, "k")
        elapsed = time.monotonic() - started
        assert resp.status_code == 200
        body = resp.json()
        assert body["allowed"] is True and body["synced"] is False
        assert elapsed < 3.0, "a paused store must become a fast error, not a hang"

        health = await http.get(f"{node}/api/health")
        assert health.status_code == 503
        store = health.json()["store"]
        assert store["reachable"] is False and store["latency_ms"] is None
        assert "store unreachable" in store["error"]

        assert (await http.get(f"{node}/api/nodes")).status_code == 503

        switched = await http.put(f"{node}/api/fail_mode", json={"mode": "closed"})
        assert switched.json()["fail_mode"] == "closed"
        closed = await check(http, node, "k")
        assert closed.status_code == 503
        assert closed.json()["allowed"] is False
    finally:
        valkey_server.resume()

    counters = (await http.get(f"{node}/api/counters")).json()
    assert counters["totals"]["unsynced"] == 1
    assert counters["totals"]["error"] == 1

    async def healthy() -> bool:
        return (await http.get(f"{node}/api/health")).status_code == 200

    await eventually(healthy)
    after = await check(http, node, "k2")
    assert after.status_code == 200 and after.json()["synced"] is True


async def test_fail_closed_refuses_checks_while_the_store_is_paused(
    start_node: StartNode, valkey_server: ValkeyServer, http: httpx.AsyncClient
) -> None:
    node = start_node("n1", fail_mode="closed")
    assert (await check(http, node, "k")).status_code == 200

    valkey_server.pause()
    try:
        resp = await check(http, node, "k")
    finally:
        valkey_server.resume()

    assert resp.status_code == 503
    body = resp.json()
    assert body["allowed"] is False
    assert body["error"].startswith("store unreachable:")
    metrics = metric_samples((await http.get(f"{node}/metrics")).text)
    assert sample(metrics, "ratelimiter_checks_total", node="n1", result="error") == 1
    assert sample(metrics, "ratelimiter_store_errors_total", node="n1") >= 1


async def test_stuck_config_refresh_ages_the_config_and_hides_new_limits_until_reload(
    start_node: StartNode, http: httpx.AsyncClient
) -> None:
    a = start_node("a", default_limit=100, default_window_ms=5000, config_refresh_s=0.3)
    b = start_node("b", default_limit=100, default_window_ms=5000, config_refresh_s=0.3)

    stuck = await http.put(f"{a}/api/failpoints/config_refresh_stuck", json={"value": True})
    assert stuck.json()["config_refresh_stuck"] is True

    async def a_stale() -> dict[str, Any] | None:
        resp = await http.get(f"{a}/api/health")
        body = resp.json()
        return body if resp.status_code == 503 and not body["config"]["fresh"] else None

    stale = await eventually(a_stale)
    assert stale["store"]["reachable"] is True
    assert stale["config"]["age_s"] >= 0.9

    put = await http.put(f"{b}/api/limits/tenant", json={"limit": 1})
    new_version = put.json()["version"]
    await asyncio.sleep(1.0)  # more than three refresh intervals
    a_view = (await http.get(f"{a}/api/limits")).json()
    assert "tenant" not in a_view["limits"]
    assert a_view["version"] < new_version
    allowed_on_a = [(await check(http, a, "tenant")).status_code for _ in range(2)]
    assert allowed_on_a == [200, 200], "a still enforces the old default, over the new limit"

    metrics = metric_samples((await http.get(f"{a}/metrics")).text)
    active = sample(metrics, "ratelimiter_failpoint_active", node="a", name="config_refresh_stuck")
    assert active == 1
    assert sample(metrics, "ratelimiter_config_age_seconds", node="a") >= 1.0

    reload = await http.post(f"{a}/api/config/reload")
    assert reload.json() == {"version": new_version}
    a_view = (await http.get(f"{a}/api/limits")).json()
    assert a_view["limits"]["tenant"] == {"limit": 1, "window_ms": 5000}
    assert (await check(http, a, "tenant")).status_code == 429
    assert (await http.get(f"{a}/api/health")).json()["config"]["age_s"] < 0.9

    await http.delete(f"{a}/api/failpoints/config_refresh_stuck")
    await asyncio.sleep(1.0)
    health = await http.get(f"{a}/api/health")
    assert health.status_code == 200, "the refresher resumes once the failpoint is cleared"


async def test_nodes_lists_the_heartbeat_of_every_node(
    start_node: StartNode, http: httpx.AsyncClient
) -> None:
    a = start_node("a")
    b = start_node("b", fail_mode="closed")

    async def both_registered() -> list[dict[str, Any]] | None:
        nodes = (await http.get(f"{a}/api/nodes")).json()["nodes"]
        return nodes if [n["node"] for n in nodes] == ["a", "b"] else None

    nodes = {n["node"]: n for n in await eventually(both_registered)}
    assert nodes["a"]["url"] == a and nodes["b"]["url"] == b
    assert nodes["b"]["fail_mode"] == "closed"
    assert nodes["b"]["pid"] == (await http.get(f"{b}/api/health")).json()["pid"]
    assert set(nodes["a"]) == {
        "node",
        "url",
        "pid",
        "started_at",
        "config_version",
        "fail_mode",
        "at",
    }


async def test_metrics_count_checks_by_result_with_the_node_label(
    start_node: StartNode, http: httpx.AsyncClient
) -> None:
    node = start_node("m1", default_limit=2, default_window_ms=5000)
    for _ in range(3):
        await check(http, node, "k")
    await http.put(f"{node}/api/failpoints/clock_skew_ms", json={"value": 5})

    resp = await http.get(f"{node}/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    metrics = metric_samples(resp.text)
    assert sample(metrics, "ratelimiter_checks_total", node="m1", result="allowed") == 2
    assert sample(metrics, "ratelimiter_checks_total", node="m1", result="denied") == 1
    assert sample(metrics, "ratelimiter_checks_total", node="m1", result="unsynced") == 0
    assert sample(metrics, "ratelimiter_check_latency_seconds_count", node="m1") == 3
    assert sample(metrics, "ratelimiter_store_errors_total", node="m1") == 0
    assert sample(metrics, "ratelimiter_config_version", node="m1") == 0
    assert sample(metrics, "ratelimiter_config_age_seconds", node="m1") >= 0
    assert sample(metrics, "ratelimiter_failpoint_active", node="m1", name="clock_skew_ms") == 1
