"""The offline rules brain on the tikv runbook: each situation's ticket is diagnosed from the
tools' answers (PD without Prometheus here), citing them, with the stable hypothesis name.

PD cannot run here: the server is the wire-format double of pd_server.py (PD v8.5.7 and
v7.5.7 payloads).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from operator_console.agent.base import BrainResult, Step, StepKind
from operator_console.agent.rules import RulesBrain
from operator_console.contract import AgentKit, Deployment, TicketContext
from operator_console.subjects.tikv import TikvKind
from tests.subjects.tikv.pd_server import PDDouble

Start = Callable[..., PDDouble]


async def investigate(
    deployment: Deployment, invariant: str, target: str
) -> tuple[BrainResult, list[Step]]:
    kit = deployment.agent
    assert kit is not None
    observation = await deployment.subject.observe()
    (violation,) = [
        v
        for inv in deployment.subject.invariants
        for v in inv.check(observation)
        if v.invariant == invariant and v.target == target
    ]
    ticket = TicketContext(
        1,
        "tikv",
        invariant,
        target,
        violation.severity.value,
        violation.message,
        violation.details,
        kit.runbook,
        kit.context,
    )
    steps: list[Step] = []
    result = await RulesBrain(kit.hypotheses).investigate(ticket, kit.toolbox(), steps.append)
    assert result.diagnosis is not None
    results = {s.tool_use_id: s for s in steps if s.kind is StepKind.TOOL_RESULT}
    for evidence in result.diagnosis.evidence:  # every claim cites a tool result that answered
        assert evidence.tool_use_id in results, evidence
        assert not results[evidence.tool_use_id].is_error
    return result, steps


CASES: list[tuple[str, str, str, str, str | None, str]] = [
    # situation, invariant, target, hypothesis, action, what the escalation says
    (
        "store-disconnected",
        "store_disconnected",
        "store-5",
        "store_process_died",
        None,
        "restart_store",
    ),
    ("store-down", "store_down", "store-5", "store_process_died", None, "restart_store"),
    (
        "store-down",
        "regions_miss_peer",
        "regions",
        "no_room_for_replicas",
        None,
        "needs 3 Up stores and has 2",
    ),
    ("store-disk-full", "store_disconnected", "store-5", "disk_full", None, "disk is full"),
    (
        "store-offline",
        "store_offline_stuck",
        "store-5",
        "no_room_for_replicas",
        None,
        "cancel the removal",
    ),
    ("pd-member-down", "pd_member_unhealthy", "pd-2", "pd_member_down", None, "restart_pd_member"),
    ("store-disk-85", "store_disk_low", "store-4", "store_filling", None, "more disk"),
    ("slow-store", "leader_imbalance", "store-5", "slow_store", "drain_store", ""),
    ("slow-store-draining", "leader_imbalance", "store-5", "store_draining", None, ""),
    ("store-recovering", "leader_imbalance", "store-5", "store_restarted", None, ""),
    ("store-recovering", "regions_down_peer", "store-5", "store_restarted", None, ""),
    ("store-recovering", "regions_pending_peer", "store-5", "store_restarted", None, ""),
]


@pytest.mark.parametrize("release", ["v7.5.7", "v8.5.7"])
@pytest.mark.parametrize(
    ("situation", "invariant", "target", "label", "action", "escalation"),
    CASES,
    ids=[f"{c[0]}:{c[1]}" for c in CASES],
)
async def test_each_ticket_gets_the_hypothesis_its_evidence_supports(
    pd_doubles: Start,
    release: str,
    situation: str,
    invariant: str,
    target: str,
    label: str,
    action: str | None,
    escalation: str,
) -> None:
    pd = pd_doubles(release=release, situation=situation)
    deployment = TikvKind().attach({"pd": pd.url}, None, lambda _s: None)  # type: ignore[arg-type]
    try:
        result, steps = await investigate(deployment, invariant, target)
    finally:
        await deployment.subject.close()
    diagnosis = result.diagnosis
    assert diagnosis is not None
    assert diagnosis.label == label, (diagnosis.summary, diagnosis.alternatives)
    assert [r.action for r in diagnosis.recommended] == ([action] if action else [])
    if escalation:
        assert result.escalation is not None and escalation in result.escalation
    else:
        assert result.escalation is None
    assert diagnosis.evidence, "a diagnosis without evidence"
    assert {s.tool for s in steps if s.kind is StepKind.TOOL_CALL} <= {
        "stores",
        "store_detail",
        "region_check",
        "region",
        "pd_members",
        "schedulers",
        "operators",
        "pd_config",
    }  # no Prometheus given, so none of its queries


async def test_a_slow_store_recommends_a_drain_with_its_numbers(pd_doubles: Start) -> None:
    pd = pd_doubles(situation="slow-store")
    deployment = TikvKind().attach({"pd": pd.url}, None, lambda _s: None)  # type: ignore[arg-type]
    try:
        result, _ = await investigate(deployment, "leader_imbalance", "store-5")
    finally:
        await deployment.subject.close()
    diagnosis = result.diagnosis
    assert diagnosis is not None
    (drain,) = diagnosis.recommended
    assert (drain.action, drain.params) == ("drain_store", {"store": "store-5"})
    assert diagnosis.risk == "high"  # every leader moves at once
    claims = [e.claim for e in diagnosis.evidence]
    assert "TiKV reports slow score 100 for store-5 (slow from 80)" in claims
    assert json.loads(diagnosis.evidence[0].excerpt) == {"slow_score": 100}
    rejected = {a.hypothesis: a.rejected_because for a in diagnosis.alternatives}
    assert "no evict-leader-scheduler holds leaders off store-5" in rejected.values()


def kit_of(deployment: Deployment) -> AgentKit:
    assert deployment.agent is not None
    return deployment.agent


async def test_tools_answer_from_pd_and_refuse_bad_input(pd_doubles: Start) -> None:
    pd = pd_doubles(situation="store-down")
    deployment = TikvKind().attach({"pd": pd.url}, None, lambda _s: None)  # type: ignore[arg-type]
    box = kit_of(deployment).toolbox()
    try:
        assert "prometheus" not in box.names()
        calls: dict[str, Any] = {
            "stores": {},
            "store_detail": {"store": 5},
            "region_check": {"kind": "down-peer"},
            "region": {"region": "region-14"},
            "pd_members": {},
            "schedulers": {},
            "operators": {},
            "pd_config": {},
            "list_actions": {},
        }
        out = {name: await box.call(name, args) for name, args in calls.items()}
        bad = [
            await box.call("store_detail", {"store": "node-1"}),
            await box.call("region_check", {"kind": "all"}),
            await box.call("stores", {"extra": 1}),
            await box.call("region", {"region": 999999}),
        ]
    finally:
        await deployment.subject.close()
    assert all(not o.is_error for o in out.values()), {k: o.content for k, o in out.items()}
    assert out["store_detail"].data["state_name"] == "Down"
    assert out["region_check"].data["count"] == 45
    assert out["region_check"].data["down_peers_by_store"] == {"store-5": 45}
    assert out["region"].data["down_peers"] == [{"store": "store-5", "down_seconds": 2112}]
    assert out["operators"].data["operators"][0]["desc"] == "admin-remove-peer"
    assert out["pd_config"].data["max_replicas"] == 3
    unavailable = {u["name"] for u in out["list_actions"].data["not_available_here"]}
    assert unavailable == {"restart_store", "resume_store", "restart_pd_member"}
    assert all(b.is_error for b in bad)
    assert "rejected its input" in bad[0].content and "unexpected field" in bad[2].content
    assert "region not found" in bad[3].content  # PD's refusal, as a tool error


async def test_the_context_names_actions_risks_and_what_cannot_be_done(
    pd_doubles: Start,
) -> None:
    pd = pd_doubles()
    deployment = TikvKind().attach({"pd": pd.url}, None, lambda _s: None)  # type: ignore[arg-type]
    try:
        context = kit_of(deployment).context
        runbook = kit_of(deployment).runbook
    finally:
        await deployment.subject.close()
    assert "- drain_store(store): high; restores latency_slo, leader_imbalance." in context
    assert "A mitigation, not a fix." in context
    assert "- restart_store: not available here (needs a container backend" in context
    assert "recorded payloads" in context
    for invariant in TikvKind().invariant_names():
        assert invariant in runbook
