"""The rules brain's degraded-node judgement: a node that fails a real share of its requests is
drained; a stray timeout on a healthy node is not a reason to touch it. Pure logic over the
evidence the tools return, so no cluster is needed here (the kit tests run the real one)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from operator_console.contract import ActionCatalog, ActionSpec, Results, TicketContext, ToolOutput
from operator_console.subjects.ratelimiter.runbook import (
    OBSERVE,
    NodeDegraded,
    node_detail,
    node_metrics,
)


class _Node(BaseModel):
    node: str


async def _never(_params: Any) -> str:
    raise AssertionError("judging evidence must not run an action")


def _ticket() -> TicketContext:
    return TicketContext(1, "ratelimiter", "error_rate", "node-3", "warning", "", {}, "", "")


def _results(per_node: dict[str, dict[str, int]]) -> Results:
    results = Results()
    detail = {"reachable": True, "healthy": True, "store_reachable": True, "config_fresh": True}
    results.put(node_detail("node-3"), ToolOutput.of(detail), "t1")
    results.put(node_metrics("node-3"), ToolOutput.of({"reachable": False}), "t2")
    results.put(OBSERVE, ToolOutput.of({"clients": {"per_node": per_node}}), "t3")
    return results


def _stats(errors: int, answered: int = 100) -> dict[str, int]:
    return {"allowed": answered // 2, "denied": answered - answered // 2, "errors": errors}


@pytest.fixture
def hypothesis() -> NodeDegraded:
    drain = ActionSpec("drain_node", "", _Node, "medium", ("error_rate",), 5.0, _never)
    return NodeDegraded(ActionCatalog([drain]))


def test_a_node_failing_a_real_share_of_requests_is_drained(hypothesis: NodeDegraded) -> None:
    per_node = {"node-1": _stats(0), "node-2": _stats(0), "node-3": _stats(20)}
    assessment = hypothesis.assess(_ticket(), _results(per_node))
    assert assessment.action is not None
    assert (assessment.action.action, assessment.action.params) == (
        "drain_node",
        {"node": "node-3"},
    )


def test_one_stray_timeout_on_a_healthy_node_recommends_nothing(hypothesis: NodeDegraded) -> None:
    per_node = {"node-1": _stats(0), "node-2": _stats(0), "node-3": _stats(1)}
    assessment = hypothesis.assess(_ticket(), _results(per_node))
    assert assessment.action is None
    assert "1 errors in 101 requests" in assessment.against
