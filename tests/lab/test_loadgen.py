"""The load generator against a real local `/check` server: rates, routing, keys, errors, truth."""

from __future__ import annotations

import asyncio
import itertools
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from operator_console.domain import WorkloadSample
from operator_console.lab.ratelimiter.loadgen import GroundTruth, LoadGenerator, percentile

# -- a tiny limiter to aim at ----------------------------------------------------------------


@dataclass
class NodeBehaviour:
    delay_s: float = 0.0
    delay_every: int = 1  # delay only every Nth request to the node
    status: int = 200
    synced: bool = True


@dataclass
class FakeLimiter:
    """Allows the first `limit` requests per key across all nodes, then answers 429."""

    limit: int = 1_000_000
    base: str = ""
    nodes: dict[str, NodeBehaviour] = field(default_factory=dict)
    hits: Counter[str] = field(default_factory=Counter)
    key_hits: Counter[str] = field(default_factory=Counter)
    allowed: Counter[str] = field(default_factory=Counter)
    concurrent: int = 0
    max_concurrent: int = 0

    def url(self, node: str) -> str:
        return f"{self.base}/{node}"

    async def check(self, request: Request) -> JSONResponse:
        node = request.path_params["node"]
        body = await request.json()
        key = body["key"]
        self.hits[node] += 1
        self.key_hits[key] += 1
        behaviour = self.nodes.get(node, NodeBehaviour())
        self.concurrent += 1
        self.max_concurrent = max(self.max_concurrent, self.concurrent)
        try:
            if behaviour.delay_s and self.hits[node] % behaviour.delay_every == 0:
                await asyncio.sleep(behaviour.delay_s)
        finally:
            self.concurrent -= 1
        if behaviour.status != 200:
            return JSONResponse({"error": "injected"}, status_code=behaviour.status)
        if self.allowed[key] < self.limit:
            self.allowed[key] += 1
            remaining = self.limit - self.allowed[key]
            return JSONResponse(
                {"allowed": True, "remaining": remaining, "synced": behaviour.synced}
            )
        return JSONResponse({"allowed": False, "remaining": 0}, status_code=429)


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def _closed_port() -> int:
    sock = _free_socket()
    port: int = sock.getsockname()[1]
    sock.close()
    return port


@pytest.fixture
async def limiter() -> AsyncIterator[FakeLimiter]:
    state = FakeLimiter()
    app = Starlette(routes=[Route("/{node}/check", state.check, methods=["POST"])])
    sock = _free_socket()
    config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    deadline = time.monotonic() + 5.0
    while not server.started:
        assert not task.done(), "test server failed to start"
        assert time.monotonic() < deadline, "test server did not start within 5s"
        await asyncio.sleep(0.01)
    state.base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    yield state
    server.should_exit = True
    await asyncio.wait_for(task, timeout=5.0)
    sock.close()


async def run_for(gen: LoadGenerator, seconds: float) -> float:
    """Run the generator for `seconds` and return how long it was really sending."""
    began = time.monotonic()
    await gen.start()
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - began
    await gen.stop()
    return elapsed


async def until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Wait for a condition, not for a time: a loaded machine sends more slowly."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.02)


# -- pure logic ------------------------------------------------------------------------------


def test_percentile_uses_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([], 50) is None


def test_ground_truth_window_excludes_start_and_includes_end() -> None:
    truth = GroundTruth()
    for t in (10.0, 10.5, 11.0, 12.0):
        truth.record("k", t, allowed=True)
    truth.record("k", 11.5, allowed=False)
    assert truth.allowed_in_window("k", 1.0, now=11.0) == 2  # 10.5 and 11.0, not 10.0
    assert truth.allowed_in_window("k", 2.0, now=12.0) == 3
    assert truth.allowed_in_window("k", 5.0, now=9.0) == 0
    assert truth.allowed_in_window("missing", 5.0, now=12.0) == 0
    assert truth.snapshot(1.5, now=12.0) == {"k": 2}


def test_ground_truth_max_window_slides_over_history() -> None:
    truth = GroundTruth()
    for t in (0.0, 0.2, 0.4, 5.0, 5.1, 5.2, 5.3, 5.9, 7.0):
        truth.record("k", t, allowed=True)
    truth.record("other", 1.0, allowed=False)
    assert truth.max_allowed_in_window("k", 1.0) == 5  # 5.0 .. 5.9
    assert truth.max_allowed_in_window("k", 0.25) == 3  # 5.0, 5.1, 5.2 (5.3 - 0.25 > 5.0)
    assert truth.max_allowed_in_window("other", 1.0) == 0
    assert truth.keys() == ["k", "other"]


def test_ground_truth_forgets_history_past_retention() -> None:
    truth = GroundTruth(retention_s=120.0)
    truth.record("old", 0.0, allowed=True)
    truth.record("k", 1.0, allowed=True)
    truth.record("k", 200.0, allowed=True)
    assert truth.allowed_in_window("k", 1000.0, now=200.0) == 1
    truth.prune(now=200.0)
    assert truth.keys() == ["k"]
    assert truth.max_allowed_in_window("k", 1000.0) == 1


def test_hot_key_shares_above_one_are_rejected() -> None:
    with pytest.raises(ValueError, match="add up"):
        LoadGenerator({"n1": "http://x"}, hot_keys={"a": 0.7, "b": 0.5})
    with pytest.raises(ValueError, match="rate"):
        LoadGenerator({"n1": "http://x"}, rate=-1)


def test_drain_state_survives_a_target_moving_but_not_its_removal() -> None:
    gen = LoadGenerator({"n1": "http://a", "n2": "http://b"})
    gen.drain("n1")
    gen.set_targets({"n1": "http://a2", "n2": "http://b"})
    assert gen.drained == frozenset({"n1"})
    assert gen.rotation == ["n2"]
    gen.set_targets({"n2": "http://b"})
    assert gen.drained == frozenset()
    with pytest.raises(KeyError, match="n1"):
        gen.drain("n1")


# -- against a real server -------------------------------------------------------------------


async def test_offered_rate_matches_configured_rate(limiter: FakeLimiter) -> None:
    gen = LoadGenerator({"n1": limiter.url("n1")}, rate=80.0, seed=1)
    elapsed = await run_for(gen, 3.0)
    expected = 80.0 * elapsed
    received = limiter.hits["n1"]
    assert 0.75 * expected <= received <= 1.25 * expected, (received, expected)
    assert gen.target_stats(window_s=30)["n1"].offered == received


async def test_round_robin_spreads_evenly_over_three_targets(limiter: FakeLimiter) -> None:
    names = ["n1", "n2", "n3"]
    gen = LoadGenerator({n: limiter.url(n) for n in names}, rate=120.0, seed=2)
    await gen.start()
    try:
        await until(lambda: sum(limiter.hits.values()) > 100, "100 requests")
    finally:
        await gen.stop()
    counts = [limiter.hits[n] for n in names]
    assert sum(counts) > 100
    assert max(counts) - min(counts) <= 1, counts
    stats = gen.target_stats(window_s=30)
    assert [stats[n].offered for n in names] == counts


async def test_drained_target_gets_nothing_until_undrained(limiter: FakeLimiter) -> None:
    names = ["n1", "n2", "n3"]
    gen = LoadGenerator({n: limiter.url(n) for n in names}, rate=120.0, seed=3)
    await gen.start()
    try:
        await until(lambda: limiter.hits["n2"] >= 5, "traffic on n2")
        gen.drain("n2")
        assert gen.rotation == ["n1", "n3"]
        assert gen.drained == frozenset({"n2"})
        await until(lambda: gen.in_flight == 0, "requests already sent to land")
        n2_at_drain, n1_at_drain = limiter.hits["n2"], limiter.hits["n1"]
        await until(lambda: limiter.hits["n1"] - n1_at_drain > 25, "25 more on n1")
        assert limiter.hits["n2"] == n2_at_drain
        gen.undrain("n2")
        assert gen.rotation == names
        await until(lambda: limiter.hits["n2"] - n2_at_drain > 15, "n2 back in rotation")
    finally:
        await gen.stop()


async def test_hot_key_receives_its_configured_share(limiter: FakeLimiter) -> None:
    keys = [f"user:{i}" for i in range(1, 11)]
    gen = LoadGenerator(
        {"n1": limiter.url("n1")}, rate=250.0, keys=keys, hot_keys={"user:hot": 0.3}, seed=4
    )
    await gen.start()
    try:
        await until(lambda: sum(limiter.key_hits.values()) > 300, "300 requests")
    finally:
        await gen.stop()
    total = sum(limiter.key_hits.values())
    share = limiter.key_hits["user:hot"] / total
    assert 0.22 <= share <= 0.38, share
    assert set(limiter.key_hits) == {*keys, "user:hot"}


async def test_closed_port_target_counts_errors(limiter: FakeLimiter) -> None:
    targets = {"live": limiter.url("live"), "dead": f"http://127.0.0.1:{_closed_port()}"}
    gen = LoadGenerator(targets, rate=60.0, seed=5)
    await run_for(gen, 1.3)
    stats = gen.target_stats(window_s=30)
    dead, live = stats["dead"], stats["live"]
    assert dead.offered > 10
    assert dead.errors == dead.offered
    assert dead.allowed == dead.denied == 0
    assert dead.p99_ms is None
    assert dead.error_kinds == {"connect": dead.errors}
    assert live.errors == 0
    assert live.allowed == live.offered == limiter.hits["live"]
    assert gen.latest is not None and gen.latest.values["errors"] > 0


async def test_server_errors_and_timeouts_are_counted_as_errors(limiter: FakeLimiter) -> None:
    limiter.nodes["broken"] = NodeBehaviour(status=500)
    limiter.nodes["slow"] = NodeBehaviour(delay_s=1.5)
    names = ["ok", "broken", "slow"]
    # A timeout well above what a healthy local answer takes even on a busy machine, and well
    # below the slow node's delay.
    gen = LoadGenerator({n: limiter.url(n) for n in names}, rate=60.0, timeout_s=0.6, seed=6)
    await run_for(gen, 1.2)
    stats = gen.target_stats(window_s=30)
    assert stats["broken"].offered > 5
    assert stats["broken"].error_kinds == {"status_500": stats["broken"].offered}
    assert stats["slow"].offered > 5
    assert stats["slow"].error_kinds == {"timeout": stats["slow"].offered}
    assert stats["slow"].p99_ms is None
    assert stats["ok"].errors == 0
    assert stats["ok"].allowed == stats["ok"].offered > 5


async def test_fail_open_responses_count_as_allowed_and_unsynced(limiter: FakeLimiter) -> None:
    limiter.nodes["open"] = NodeBehaviour(synced=False)
    gen = LoadGenerator({"open": limiter.url("open"), "ok": limiter.url("ok")}, rate=60.0, seed=7)
    await run_for(gen, 1.2)
    stats = gen.target_stats(window_s=30)
    assert stats["open"].allowed == stats["open"].unsynced == stats["open"].offered > 5
    assert stats["ok"].unsynced == 0
    assert gen.latest is not None
    assert gen.latest.per_target["open"]["unsynced"] == gen.latest.per_target["open"]["allowed"]
    assert gen.latest.per_target["open"]["unsynced"] > 0


async def test_p99_reflects_delay_injected_on_one_target(limiter: FakeLimiter) -> None:
    limiter.nodes["n3"] = NodeBehaviour(delay_s=0.15, delay_every=10)
    names = ["n1", "n2", "n3"]
    gen = LoadGenerator({n: limiter.url(n) for n in names}, rate=90.0, seed=8)
    await gen.start()
    try:
        await asyncio.sleep(0.8)
        gen.clear_stats()  # connection set-up is not what this test measures
        await asyncio.sleep(1.5)
        stats = gen.target_stats(window_s=5.0)
    finally:
        await gen.stop()
    assert stats["n3"].p99_ms is not None and stats["n3"].p99_ms >= 150.0
    assert stats["n3"].p50_ms is not None and stats["n3"].p50_ms < 150.0
    for name in ("n1", "n2"):
        p99 = stats[name].p99_ms
        assert p99 is not None and p99 < stats["n3"].p99_ms, (name, p99)


async def test_ground_truth_matches_what_the_server_allowed(limiter: FakeLimiter) -> None:
    limiter.limit = 5
    keys = ["user:1", "user:2", "user:3", "user:4"]
    gen = LoadGenerator(
        {"n1": limiter.url("n1"), "n2": limiter.url("n2")}, rate=100.0, keys=keys, seed=9
    )
    await run_for(gen, 1.5)
    truth = gen.ground_truth
    assert truth.keys() == keys
    assert truth.snapshot(60.0) == dict(limiter.allowed) == dict.fromkeys(keys, 5)
    for key in keys:
        assert truth.allowed_in_window(key, 60.0) == limiter.allowed[key]
        assert truth.max_allowed_in_window(key, 60.0) == 5
    assert truth.allowed_in_window("user:1", 60.0, now=time.monotonic() - 60.0) == 0
    stats = gen.target_stats(window_s=30)
    total = sum(limiter.hits.values())
    assert sum(s.allowed for s in stats.values()) == 20
    assert sum(s.denied for s in stats.values()) == total - 20 > 50


async def test_samples_arrive_every_second_even_when_on_sample_raises(
    limiter: FakeLimiter,
) -> None:
    samples: list[tuple[float, WorkloadSample]] = []

    def on_sample(sample: WorkloadSample) -> None:
        samples.append((time.monotonic(), sample))
        if len(samples) == 1:
            raise RuntimeError("a broken subscriber")

    gen = LoadGenerator(
        {"n1": limiter.url("n1"), "n2": limiter.url("n2")}, rate=50.0, on_sample=on_sample, seed=10
    )
    await run_for(gen, 3.4)
    assert 3 <= len(samples) <= 4, len(samples)
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(samples)]
    assert all(0.7 <= gap <= 1.3 for gap in gaps), gaps
    assert list(gen.history) == [s for _, s in samples]
    assert gen.latest is samples[-1][1]
    for _, sample in samples:
        assert 20 <= sample.values["offered"] <= 90, sample.values["offered"]
        assert sample.values["allowed"] + sample.values["denied"] + sample.values["errors"] > 0
        assert set(sample.per_target) == {"n1", "n2"}
        assert set(sample.per_target["n1"]) == {
            "offered",
            "allowed",
            "denied",
            "errors",
            "unsynced",
            "p50_ms",
            "p99_ms",
        }
        assert sample.values["p50_ms"] is not None and sample.values["p99_ms"] is not None
    assert sum(s.values["offered"] for _, s in samples) <= limiter.hits["n1"] + limiter.hits["n2"]


async def test_requests_beyond_max_in_flight_are_counted_as_overload(
    limiter: FakeLimiter,
) -> None:
    limiter.nodes["n1"] = NodeBehaviour(delay_s=0.4)
    gen = LoadGenerator({"n1": limiter.url("n1")}, rate=60.0, max_in_flight=3, seed=11)
    await run_for(gen, 1.0)
    stats = gen.target_stats(window_s=30)["n1"]
    assert limiter.max_concurrent <= 3
    assert stats.error_kinds.get("overload", 0) > 20
    assert stats.allowed == limiter.hits["n1"]
    assert stats.offered == stats.allowed + stats.errors


async def test_empty_rotation_counts_offered_as_errors(limiter: FakeLimiter) -> None:
    gen = LoadGenerator({"n1": limiter.url("n1")}, rate=60.0, seed=12)
    gen.drain("n1")
    await run_for(gen, 1.2)
    assert limiter.hits["n1"] == 0
    assert gen.latest is not None
    assert gen.latest.values["offered"] > 30
    assert gen.latest.values["errors"] == gen.latest.values["offered"]
    assert gen.latest.per_target["n1"]["offered"] == 0


async def test_rate_zero_pauses_and_set_rate_resumes(limiter: FakeLimiter) -> None:
    gen = LoadGenerator({"n1": limiter.url("n1")}, rate=0.0, seed=13)
    await gen.start()
    try:
        await asyncio.sleep(0.4)
        assert limiter.hits["n1"] == 0
        gen.set_rate(100.0)
        await asyncio.sleep(0.6)
    finally:
        await gen.stop()
    assert 30 <= limiter.hits["n1"] <= 90, limiter.hits["n1"]


async def test_set_targets_moves_traffic_to_the_new_address(limiter: FakeLimiter) -> None:
    gen = LoadGenerator({"n1": limiter.url("old")}, rate=100.0, seed=14)
    await gen.start()
    try:
        await until(lambda: limiter.hits["old"] > 20, "traffic to the old address")
        gen.set_targets({"n1": limiter.url("new")})
        await until(lambda: gen.in_flight == 0, "requests already sent to land")
        old_hits = limiter.hits["old"]
        await until(lambda: limiter.hits["new"] > 30, "traffic to the new address")
    finally:
        await gen.stop()
    assert limiter.hits["old"] == old_hits
