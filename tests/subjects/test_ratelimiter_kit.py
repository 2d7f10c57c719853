"""The ratelimiter agent kit on a real cluster: each fault is diagnosed from evidence and fixed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from operator_console.agent.base import BrainResult, Step, StepKind
from operator_console.agent.rules import RulesBrain
from operator_console.contract import ActionInputError, Deployment, TicketContext
from operator_console.lab.ratelimiter.cluster import RateLimiterCluster
from operator_console.subjects.ratelimiter import RateLimiterKind
from operator_console.subjects.ratelimiter.actions import ActionFailed
from operator_console.subjects.ratelimiter.kit import RateLimiterAgentKit

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

TOPOLOGY = {"nodes": 3, "default_limit": 50, "window_ms": 2000, "config_refresh_s": 0.3}
WORKLOAD = {"rate": 60, "keys": 20, "hot_keys": {"user:hot": 0.4}}
FAILPOINTS = ("clock_skew_ms", "config_refresh_stuck")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def deployment(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Deployment]:
    run_dir: Path = tmp_path_factory.mktemp("ratelimiter-kit")
    deployed = RateLimiterKind().deploy(TOPOLOGY, WORKLOAD, run_dir, lambda _sample: None)
    await deployed.lab.start()
    try:
        assert deployed.workload is not None
        await deployed.workload.start()
        yield deployed
    finally:
        if deployed.workload is not None:
            await deployed.workload.stop()
        await deployed.subject.close()
        await deployed.lab.stop()


@pytest.fixture(scope="module")
def cluster(deployment: Deployment) -> RateLimiterCluster:
    assert isinstance(deployment.lab, RateLimiterCluster)
    return deployment.lab


@pytest.fixture(scope="module")
def kit(deployment: Deployment) -> RateLimiterAgentKit:
    assert isinstance(deployment.agent, RateLimiterAgentKit)
    return deployment.agent


def clients(deployment: Deployment) -> Any:
    """The console's side of the clients process (rotation, drains)."""
    return deployment.workload


async def eventually(probe: Callable[[], Awaitable[bool]], what: str, timeout: float = 8.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await probe():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for: {what}")


async def node_answers(cluster: RateLimiterCluster, node: str) -> bool:
    try:
        response = await cluster.http.get(f"{cluster.node_url(node)}/api/health", timeout=0.5)
    except Exception:
        return False
    return response.status_code == 200


async def cluster_healthy(deployment: Deployment) -> bool:
    """Every node and the store answer healthy, and the clients' window holds no error from an
    earlier test's fault (a later test reads that window as evidence)."""
    state = (await deployment.subject.observe()).state
    window = state.workload.per_target if state.workload is not None else {}  # type: ignore[attr-defined]
    return (
        state.store.reachable  # type: ignore[attr-defined]
        and all(
            n.reachable and n.healthy
            for n in state.nodes.values()  # type: ignore[attr-defined]
        )
        and not any(stats.get("errors") for stats in window.values())
    )


@pytest_asyncio.fixture(autouse=True, loop_scope="module")
async def healthy_afterwards(
    deployment: Deployment, cluster: RateLimiterCluster
) -> AsyncIterator[None]:
    """Put the cluster back to clean after each test so one failure does not cascade."""
    yield
    status = cluster.store_status()
    if status == "paused":
        cluster.resume_store()
    elif status != "running":
        await cluster.restart_store()
    for name in cluster.node_names:
        await cluster.proxy(name).restore()
        status = cluster.node_status(name)
        if status == "paused":
            cluster.resume_node(name)
        elif status != "running":
            await cluster.restart_node(name)
        url = cluster.node_url(name)
        for failpoint in FAILPOINTS:
            await cluster.http.delete(f"{url}/api/failpoints/{failpoint}")
        await cluster.http.put(f"{url}/api/fail_mode", json={"mode": "open"})
        if name in clients(deployment).drained:
            await clients(deployment).undrain(name)
    await eventually(lambda: cluster_healthy(deployment), "cluster healthy again", timeout=15.0)


def ticket(kit: RateLimiterAgentKit, invariant: str, target: str, **details: Any) -> TicketContext:
    return TicketContext(
        ticket_id=7,
        subject="ratelimiter",
        invariant=invariant,
        target=target,
        severity="critical",
        message=f"{invariant} on {target}",
        details=details,
        runbook=kit.runbook,
        subject_context=kit.context,
    )


async def investigate(
    kit: RateLimiterAgentKit, invariant: str, target: str, **details: Any
) -> BrainResult:
    steps: list[Step] = []
    result = await RulesBrain(kit.hypotheses).investigate(
        ticket(kit, invariant, target, **details), kit.toolbox(), steps.append
    )
    assert result.steps == steps
    assert result.diagnosis is not None
    assert result.diagnosis.alternatives, "every ticket weighs more than one explanation"
    return result


def recommended(kit: RateLimiterAgentKit, result: BrainResult) -> tuple[str, dict[str, Any]]:
    """The one recommended action, after checking every evidence item cites a tool result."""
    diagnosis = result.diagnosis
    assert diagnosis is not None
    results = {s.tool_use_id for s in result.steps if s.kind is StepKind.TOOL_RESULT}
    assert diagnosis.evidence, diagnosis
    for item in diagnosis.evidence:
        assert item.tool_use_id in results, item
    assert len(diagnosis.recommended) == 1, diagnosis
    action = diagnosis.recommended[0]
    assert diagnosis.risk == kit.actions.get(action.action).risk
    return action.action, action.params


async def execute(kit: RateLimiterAgentKit, action: str, params: dict[str, Any]) -> str:
    spec = kit.actions.get(action)
    return await asyncio.wait_for(spec.run(spec.validate(params)), spec.timeout_s)


# ------------------------------------------------------------------ faults, diagnosed and fixed


async def test_killed_node_is_diagnosed_and_restarted(
    deployment: Deployment, cluster: RateLimiterCluster, kit: RateLimiterAgentKit
) -> None:
    fault = deployment.lab.make_fault("node_kill", "node-2", {})
    await fault.inject()
    result = await investigate(kit, "node_down", "node-2")
    assert recommended(kit, result) == ("restart_node", {"node": "node-2"})
    assert "killed" in result.diagnosis.evidence[0].claim  # type: ignore[union-attr]
    assert not await node_answers(cluster, "node-2")

    said = await execute(kit, "restart_node", {"node": "node-2"})

    assert "node-2" in said
    assert cluster.node_status("node-2") == "running"
    assert await node_answers(cluster, "node-2")
    await fault.clear()


async def test_paused_node_is_diagnosed_and_resumed(
    deployment: Deployment, cluster: RateLimiterCluster, kit: RateLimiterAgentKit
) -> None:
    fault = deployment.lab.make_fault("node_pause", "node-3", {})
    await fault.inject()
    result = await investigate(kit, "node_down", "node-3")
    assert recommended(kit, result) == ("resume_node", {"node": "node-3"})
    rejected = {a.hypothesis: a.rejected_because for a in result.diagnosis.alternatives}  # type: ignore[union-attr]
    assert any("paused" in why for why in rejected.values()), rejected

    await execute(kit, "resume_node", {"node": "node-3"})

    assert cluster.node_status("node-3") == "running"
    await eventually(lambda: node_answers(cluster, "node-3"), "node-3 answers", timeout=3)
    await fault.clear()


async def test_paused_store_is_diagnosed_and_resumed(
    deployment: Deployment, cluster: RateLimiterCluster, kit: RateLimiterAgentKit
) -> None:
    fault = deployment.lab.make_fault("store_pause", "store", {})
    await fault.inject()
    result = await investigate(kit, "store_unreachable", "store")
    assert recommended(kit, result) == ("resume_store", {})

    await execute(kit, "resume_store", {})

    assert cluster.store_status() == "running"
    detail = await kit.toolbox().call("store_detail", {})
    assert detail.data["reachable"] is True, detail.content
    await fault.clear()


async def test_skewed_clock_behind_over_limit_is_cleared(
    deployment: Deployment, cluster: RateLimiterCluster, kit: RateLimiterAgentKit
) -> None:
    fault = deployment.lab.make_fault("clock_skew", "node-3", {})
    await fault.inject()
    result = await investigate(kit, "over_limit", "user:hot")
    assert recommended(kit, result) == (
        "clear_failpoint",
        {"node": "node-3", "name": "clock_skew_ms"},
    )

    await execute(kit, "clear_failpoint", {"node": "node-3", "name": "clock_skew_ms"})

    response = await cluster.http.get(f"{cluster.node_url('node-3')}/api/failpoints")
    assert response.json()["clock_skew_ms"] == 0
    await fault.clear()


async def test_stuck_refresh_is_diagnosed_for_drift_and_over_limit_and_unstuck(
    deployment: Deployment, cluster: RateLimiterCluster, kit: RateLimiterAgentKit
) -> None:
    fault = deployment.lab.make_fault("config_stuck", "node-2", {"key": "user:hot", "limit": 20})
    await fault.inject()
    fix = ("clear_failpoint", {"node": "node-2", "name": "config_refresh_stuck"})

    drift = await investigate(kit, "config_drift", "node-2")
    assert recommended(kit, drift) == fix
    over = await investigate(kit, "over_limit", "user:hot")
    assert recommended(kit, over) == fix
    assert over.diagnosis.root_cause.startswith("a node runs a stale config")  # type: ignore[union-attr]

    said = await execute(kit, *fix)

    assert "reloaded" in said
    url = cluster.node_url("node-2")
    failpoints = (await cluster.http.get(f"{url}/api/failpoints")).json()
    assert failpoints["config_refresh_stuck"] is False
    limits = (await cluster.http.get(f"{url}/api/limits")).json()
    assert limits["limits"]["user:hot"]["limit"] == 20
    await fault.clear()


async def test_slow_link_node_is_drained_then_undrained(
    deployment: Deployment, cluster: RateLimiterCluster, kit: RateLimiterAgentKit
) -> None:
    fault = deployment.lab.make_fault("link_latency", "node-1", {"ms": 100})
    await fault.inject()
    result = await investigate(kit, "latency_slo", "node-1", slo_ms=250.0)
    assert recommended(kit, result) == ("drain_node", {"node": "node-1"})

    await execute(kit, "drain_node", {"node": "node-1"})

    assert "node-1" not in clients(deployment).rotation
    assert "node-1" in deployment.workload.drained  # type: ignore[union-attr]
    await execute(kit, "undrain_node", {"node": "node-1"})
    assert "node-1" in clients(deployment).rotation
    await fault.clear()


async def test_cut_link_to_the_store_recommends_draining_that_node(
    deployment: Deployment, kit: RateLimiterAgentKit
) -> None:
    fault = deployment.lab.make_fault("link_cut", "node-3", {})
    await fault.inject()
    try:
        result = await investigate(kit, "store_unreachable", "node-3")
        assert recommended(kit, result) == ("drain_node", {"node": "node-3"})
    finally:
        await fault.clear()


@pytest.mark.parametrize(
    ("invariant", "target"),
    [
        ("node_down", "node-1"),
        ("store_unreachable", "store"),
        ("store_unreachable", "node-2"),
        ("over_limit", "user:hot"),
        ("config_drift", "node-2"),
        ("latency_slo", "node-1"),
        ("error_rate", "node-3"),
        ("observation_failed", "metrics:node-1"),
    ],
)
async def test_healthy_evidence_recommends_nothing(
    kit: RateLimiterAgentKit, invariant: str, target: str
) -> None:
    result = await investigate(kit, invariant, target)
    assert result.diagnosis is not None
    assert result.diagnosis.recommended == [], result.diagnosis


# ------------------------------------------------------------------------------- actions


@pytest.mark.parametrize(
    ("action", "params"),
    [
        ("restart_node", {"node": "node-9"}),
        ("restart_node", {}),
        ("restart_node", {"node": "node-1", "force": True}),
        ("drain_node", {"node": "store"}),
        ("clear_failpoint", {"node": "node-1", "name": "disk_full"}),
        ("clear_failpoint", {"node": "node-7", "name": "clock_skew_ms"}),
        ("set_limit", {"key": "user:1", "limit": -1}),
        ("set_limit", {"key": "user:1", "limit": 0}),
        ("set_limit", {"key": "user:1", "limit": "10"}),
        ("set_limit", {"key": "user:1", "limit": 10, "window_ms": 0}),
        ("set_limit", {"key": "", "limit": 10}),
        ("set_limit", {"key": "__default__", "limit": 10}),
        ("set_fail_mode", {"node": "node-1", "mode": "sometimes"}),
        ("reset_counter", {}),
        ("restart_store", {"now": True}),
    ],
)
async def test_actions_reject_bad_params(
    kit: RateLimiterAgentKit, action: str, params: dict[str, Any]
) -> None:
    with pytest.raises(ActionInputError, match=action):
        kit.actions.get(action).validate(params)


async def test_draining_refuses_to_empty_the_rotation(
    deployment: Deployment, kit: RateLimiterAgentKit
) -> None:
    await execute(kit, "drain_node", {"node": "node-1"})
    await execute(kit, "drain_node", {"node": "node-2"})
    with pytest.raises(ActionFailed, match="last node"):
        await execute(kit, "drain_node", {"node": "node-3"})
    assert clients(deployment).rotation == ["node-3"]


async def test_key_and_node_actions_change_the_lab(
    cluster: RateLimiterCluster, kit: RateLimiterAgentKit
) -> None:
    await execute(kit, "set_limit", {"key": "user:probe", "limit": 5, "window_ms": 60_000})
    store = (await kit.toolbox().call("store_detail", {})).data
    assert store["limits"]["user:probe"] == {"limit": 5, "window_ms": 60_000}

    check = f"{cluster.node_url('node-1')}/check"
    for _ in range(3):
        answer = (await cluster.http.post(check, json={"key": "user:probe"})).json()
    assert answer["remaining"] == 2
    await execute(kit, "reset_counter", {"key": "user:probe"})
    answer = (await cluster.http.post(check, json={"key": "user:probe"})).json()
    assert answer["remaining"] == 4

    await execute(kit, "set_fail_mode", {"node": "node-2", "mode": "closed"})
    detail = (await kit.toolbox().call("node_detail", {"node": "node-2"})).data
    assert detail["fail_mode"] == "closed"

    said = await execute(kit, "reload_config", {"node": "node-3"})
    assert f"v{store['config_version']}" in said


async def test_resume_refuses_a_dead_node(
    cluster: RateLimiterCluster, kit: RateLimiterAgentKit
) -> None:
    cluster.kill_node("node-1")
    with pytest.raises(ActionFailed, match="restart"):
        await execute(kit, "resume_node", {"node": "node-1"})


# --------------------------------------------------------------------------------- tools


async def test_tail_log_returns_the_processes_real_log_lines(kit: RateLimiterAgentKit) -> None:
    tools = kit.toolbox()
    node = await tools.call("tail_log", {"process": "node-1", "lines": 200})
    assert not node.is_error, node.content
    assert any("node-1" in line for line in node.data["lines"])
    short = await tools.call("tail_log", {"process": "store", "lines": 3})
    assert 0 < len(short.data["lines"]) <= 3
    store = await tools.call("tail_log", {"process": "store", "lines": 200})
    assert any("Ready to accept connections" in line for line in store.data["lines"])
    for bad in (
        {"process": "node-9"},
        {"process": "node-1", "lines": 0},
        {"process": "store", "lines": 201},
        {},
    ):
        assert (await tools.call("tail_log", bad)).is_error, bad


async def test_detail_tools_read_the_link_metrics_and_catalog(
    cluster: RateLimiterCluster, kit: RateLimiterAgentKit
) -> None:
    tools = kit.toolbox()
    await cluster.proxy("node-2").set_latency(40)
    detail = await tools.call("node_detail", {"node": "node-2"})
    assert detail.data["link"]["latency_ms"] == 40
    assert detail.data["process"] == "running"
    assert detail.data["drained"] is False

    metrics = await tools.call("node_metrics", {"node": "node-2"})
    assert metrics.data["reachable"] is True
    assert metrics.data["checks"]["allowed"] > 0
    assert metrics.data["failpoints_active"] == {n: False for n in FAILPOINTS}

    listed = await tools.call("list_actions", {})
    assert [a["name"] for a in listed.data["actions"]] == kit.actions.names()
    assert len(listed.content) < 4000
    assert (await tools.call("node_detail", {"node": "node-0"})).is_error
    assert (await tools.call("observe", {"everything": True})).is_error
