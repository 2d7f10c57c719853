"""The tikv subject with a real Prometheus: per-store QPS, gRPC p99 and raft latencies in
the observation, the latency SLO, and the hypotheses that need Prometheus to tell a dead
process from a cut link.

Prometheus 2.42 (Debian's) scrapes, once a second, doubles serving /metrics captures
written to TiKV's and PD's exposition formats; PD is the wire-format double of
pd_server.py. Neither TiKV nor PD runs here. A PD situation is paired with a metrics set
the way the cluster would show it: a Disconnected store whose process is still scraped
is a store cut off from PD, one that is not scraped is a dead process.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from operator_console.agent.rules import RulesBrain
from operator_console.contract import Deployment, TicketContext
from operator_console.lab.ports import free_port
from operator_console.subjects.tikv import TikvKind
from operator_console.subjects.tikv.state import TikvState
from tests.subjects.tikv import expected_metrics as expected
from tests.subjects.tikv.pd_server import MetricsDouble, PDDouble
from tests.subjects.tikv.prometheus_harness import (
    WINDOW_S,
    RunningPrometheus,
    prometheus_binary,
    start_prometheus,
    wait_for_window,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(
        prometheus_binary() is None, reason="no prometheus binary at /usr/bin/prometheus"
    ),
]

SETS = ("healthy", "store-disconnected", "pd-member-down")
Start = Callable[..., PDDouble]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def prom(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningPrometheus]:
    doubles = [MetricsDouble(name).start() for name in SETS]
    running = None
    try:
        running = await start_prometheus(Path(tmp_path_factory.mktemp("prometheus")), doubles)
        await wait_for_window(running)
        yield running
    finally:
        if running is not None:
            await running.supervisor.stop_all()
        for double in doubles:
            double.stop()


def endpoints(pd: PDDouble, prom: RunningPrometheus, metrics: str, **extra: Any) -> dict[str, Any]:
    return {
        "pd": pd.url,
        "prometheus": {"url": prom.url, "labels": f'cluster="{metrics}"', "window": f"{WINDOW_S}s"},
        **extra,
    }


def attach(data: dict[str, Any]) -> Deployment:
    return TikvKind().attach(data, None, lambda _s: None)  # type: ignore[arg-type]


def keys(deployment: Deployment, observation: Any) -> set[str]:
    return {v.dedup_key for i in deployment.subject.invariants for v in i.check(observation)}


async def diagnose(deployment: Deployment, invariant: str, target: str) -> Any:
    kit = deployment.agent
    assert kit is not None
    observation = await deployment.subject.observe()
    (violation,) = [
        v
        for i in deployment.subject.invariants
        for v in i.check(observation)
        if v.dedup_key == f"{invariant}:{target}"
    ]
    ticket = TicketContext(
        1,
        "tikv",
        invariant,
        target,
        "warning",
        violation.message,
        violation.details,
        kit.runbook,
        kit.context,
    )
    return await RulesBrain(kit.hypotheses).investigate(ticket, kit.toolbox(), lambda _s: None)


async def test_each_store_carries_prometheus_figures(
    pd_doubles: Start, prom: RunningPrometheus
) -> None:
    pd = pd_doubles()
    deployment = attach(endpoints(pd, prom, "healthy"))
    try:
        observation = await deployment.subject.observe()
    finally:
        await deployment.subject.close()
    state = observation.state
    assert isinstance(state, TikvState) and state.prometheus_ok
    assert observation.sources["prometheus"].ok
    metrics = next(m for m in prom.sets if m.set_name == "healthy")
    for target, name in (("store-1", "tikv-0"), ("store-4", "tikv-1"), ("store-5", "tikv-2")):
        got = state.stores[target].metrics
        assert got is not None and got.up is True and got.instance == f"{name}:20180"
        # Queried now, a rate's window edges fall between scrapes: Prometheus extrapolates
        # them by half a scrape interval at most, a few percent of a 5 s window. Quantiles
        # come from rates of series scraped together, so those edges cancel out.
        assert got.qps == pytest.approx(expected.qps(metrics, name), rel=0.25)
        p99 = expected.bucket_quantile(
            metrics, name, "tikv_grpc_msg_duration_seconds", keep=lambda lb: lb["type"] != "kv_gc"
        )
        assert got.grpc_p99_ms == pytest.approx(p99 * 1000, rel=0.01)
        append = expected.bucket_quantile(
            metrics, name, "tikv_raftstore_append_log_duration_seconds"
        )
        assert got.append_p99_ms == pytest.approx(append * 1000, rel=0.01)
        for kind in ("used", "capacity"):  # gauges: the value at the query's instant
            at_start = expected.value_at(metrics, name, "tikv_store_size_bytes", {"type": kind}, 0)
            assert getattr(got, f"{kind}_bytes") == pytest.approx(at_start, rel=0.01)
    assert keys(deployment, observation) == set()  # 51 ms is within the default 200 ms SLO
    row = {r.target: r for r in deployment.subject.panel(observation).rows}["store-5"]
    assert row.cells["qps"].isdigit() and row.cells["p99"].startswith("51.")
    assert all(m.up is True for m in state.members)


async def test_a_store_over_the_slo_is_a_slow_store_to_drain(
    pd_doubles: Start, prom: RunningPrometheus
) -> None:
    pd = pd_doubles()
    deployment = attach(endpoints(pd, prom, "healthy", thresholds={"grpc_p99_ms": 40}))
    try:
        over = await deployment.subject.observe()
        assert keys(deployment, over) == {"latency_slo:store-5"}
        result = await diagnose(deployment, "latency_slo", "store-5")
        # Drained, the store serves nothing of its own: its p99 no longer counts.
        pd.set_situation("leaders-evicted")
        drained = await deployment.subject.observe()
        still_slow = deployment.subject.condition("store_slow", "store-5", drained)
    finally:
        await deployment.subject.close()
    assert result.diagnosis.label == "slow_store"
    assert [(r.action, r.params) for r in result.diagnosis.recommended] == [
        ("drain_store", {"store": "store-5"})
    ]
    claim = result.diagnosis.evidence[0].claim
    assert claim.startswith("store-5 appends its raft log in 40.") and "x" in claim
    assert keys(deployment, drained) == set()
    # Its raft log is still four times slower: the cause the drain hides remains.
    assert still_slow is not None and still_slow.holds and "appends" in still_slow.remains


@pytest.mark.parametrize(
    ("metrics", "label", "escalation"),
    [
        ("store-disconnected", "store_process_died", "restart_store"),
        ("healthy", "network_partition", "link between the store and PD is cut"),
    ],
)
async def test_prometheus_tells_a_dead_process_from_a_cut_link(
    pd_doubles: Start, prom: RunningPrometheus, metrics: str, label: str, escalation: str
) -> None:
    pd = pd_doubles(situation="store-disconnected")
    deployment = attach(endpoints(pd, prom, metrics))
    try:
        result = await diagnose(deployment, "store_disconnected", "store-5")
    finally:
        await deployment.subject.close()
    diagnosis = result.diagnosis
    assert diagnosis.label == label, diagnosis.alternatives
    assert result.escalation is not None and escalation in result.escalation
    scraped = [e for e in diagnosis.evidence if "status port (tikv-2:20180)" in e.claim]
    assert len(scraped) == 1 and ("up=0" if label == "store_process_died" else "up=1") in (
        scraped[0].claim
    )
    assert diagnosis.confidence >= 0.5


@pytest.mark.parametrize(
    ("metrics", "label"),
    [("pd-member-down", "pd_member_down"), ("healthy", "pd_member_partitioned")],
)
async def test_prometheus_tells_a_dead_pd_member_from_a_cut_off_one(
    pd_doubles: Start, prom: RunningPrometheus, metrics: str, label: str
) -> None:
    pd = pd_doubles(situation="pd-member-down")
    deployment = attach(endpoints(pd, prom, metrics))
    try:
        result = await diagnose(deployment, "pd_member_unhealthy", "pd-2")
    finally:
        await deployment.subject.close()
    assert result.diagnosis.label == label
    assert result.escalation


async def test_the_sampler_draws_qps_and_the_slowest_p99(
    pd_doubles: Start, prom: RunningPrometheus
) -> None:
    pd = pd_doubles()
    deployment = attach(endpoints(pd, prom, "healthy", thresholds={"grpc_p99_ms": 150}))
    workload = deployment.workload
    assert workload is not None
    try:
        await deployment.subject.observe()  # names the instances after PD's stores
        sample = await workload.sample()  # type: ignore[attr-defined]
    finally:
        await deployment.subject.close()
    assert [(s.key, s.unit, s.alarm) for s in workload.series] == [
        ("qps", "/s", None),
        ("grpc_p99_ms", "ms", 150),
    ]
    assert sample.values["qps"] == pytest.approx(2700, rel=0.25)  # see the QPS test above
    assert sample.values["grpc_p99_ms"] == pytest.approx(51.2, rel=0.01)
    assert set(sample.per_target) == {"store-1", "store-4", "store-5"}


async def test_the_prometheus_tool_answers_named_queries_per_store(
    pd_doubles: Start, prom: RunningPrometheus
) -> None:
    pd = pd_doubles(situation="store-disconnected")
    deployment = attach(endpoints(pd, prom, "store-disconnected"))
    assert deployment.agent is not None
    box = deployment.agent.toolbox()
    try:
        up = await box.call("prometheus", {"query": "targets_up"})
        bad = await box.call("prometheus", {"query": "up{}"})
    finally:
        await deployment.subject.close()
    assert up.data["stores"] == {"store-1": 1.0, "store-4": 1.0, "store-5": 0.0}
    assert up.data["values"]["pd-0:2379"] == 1.0
    assert bad.is_error and "query must be one of" in bad.content


async def test_a_prometheus_that_does_not_answer_is_a_failed_source(pd_doubles: Start) -> None:
    pd = pd_doubles(situation="store-disk-85")
    deployment = attach({"pd": pd.url, "prometheus": f"http://127.0.0.1:{free_port()}"})
    try:
        observation = await deployment.subject.observe()
    finally:
        await deployment.subject.close()
    assert not observation.sources["prometheus"].ok
    assert "cannot be reached" in observation.sources["prometheus"].reason
    assert keys(deployment, observation) == {
        "store_disk_low:store-4",
        "observation_failed:prometheus",
    }
