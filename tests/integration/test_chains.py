"""Chains on a real rate limiter cluster: one approval covers every step; a step that fails for
real stops the chain, the steps before it are undone where they declare an undo, and the ticket
goes to a person with the whole story."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from operator_console.actions.chain import chain_action
from operator_console.contract import Deployment
from operator_console.domain.events import ActionFailed, ActionStep, TicketEscalated
from operator_console.subjects.ratelimiter import RateLimiterKind
from tests.executor_harness import loops

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

TOPOLOGY = {"nodes": 3, "default_limit": 50, "window_ms": 2000, "config_refresh_s": 0.3}
WORKLOAD = {"rate": 40, "keys": 20}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def deployment(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Deployment]:
    run_dir: Path = tmp_path_factory.mktemp("chains")
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


async def test_a_failing_second_step_stops_the_chain_undoes_the_first_and_escalates(
    deployment: Deployment, tmp_path: Path
) -> None:
    assert deployment.agent is not None
    async with loops(
        deployment, tmp_path, catalog=deployment.agent.actions.with_action(chain_action())
    ) as run:
        fault = deployment.lab.make_fault("node_kill", "node-2", {})
        await fault.inject()
        ticket = await run.ticket("node_down", "node-2")
        # Drain node-2, then resume it: but node-2 was killed, not paused, so resuming fails
        # for real (there is no stopped process to continue).
        steps = [
            {"action": "drain_node", "params": {"node": "node-2"}},
            {"action": "resume_node", "params": {"node": "node-2"}},
        ]
        row = await run.propose(ticket, "chain", {"steps": steps})
        assert row.risk == "medium" and row.targets == ["node-2"]
        assert [s["action"] for s in row.steps or []] == ["drain_node", "resume_node"]
        failed = await run.approve_and_wait(row)
        assert isinstance(failed, ActionFailed)
        story = [(e.index, e.step, e.step_state) for e in run.of(ActionStep, action_id=row.id)]
        assert story == [
            (1, "drain_node", "executing"),
            (1, "drain_node", "succeeded"),
            (2, "resume_node", "executing"),
            (2, "resume_node", "failed"),
            (1, "drain_node", "undone"),
        ]
        assert failed.error is not None
        assert failed.error.startswith("step 2 of 2 (resume_node node=node-2) failed: ")
        assert failed.error.endswith("; step 1 (drain_node) undone by undrain_node")
        escalated = await run.next(TicketEscalated, ticket_id=ticket.id)
        assert isinstance(escalated, TicketEscalated)
        assert escalated.reason == f"action chain failed: {failed.error}"
        # The undo really ran: node-2 is back in the clients' rotation.
        stored = await run.stored(row.id)
        assert [s["state"] for s in stored.steps or []] == ["undone", "failed"]
        assert "node-2" not in deployment.workload.drained  # type: ignore[union-attr]
        await fault.clear()
