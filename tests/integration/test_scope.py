"""The policy's scope on real runs: an automatic action only where the evidence points, and a
person decides everything else, whatever the mode. The model is the real `anthropic` SDK
against the local Messages server; the cluster is the real lab."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy.engine import Engine

from operator_console.actions.store import ActionRepository, Mode
from operator_console.cli import main
from operator_console.db import create_db_engine, init_db
from operator_console.domain.events import ActionExecuting, ActionProposed, Event
from operator_console.runtime import Runtime
from operator_console.scenarios import find_scenario
from operator_console.scenarios.model import Chapter, Expect
from operator_console.scenarios.runner import ScenarioRunner
from operator_console.settings import Settings
from tests.agent.messages_server import MessagesServer, message, tool_use

pytestmark = pytest.mark.integration


def wrong_target_model(server: MessagesServer) -> None:
    """A model that reads the cluster, sees node-2 down, and recommends restarting node-1."""
    diagnosis = {
        "summary": "node-2 does not answer.",
        "root_cause": "node-2's process is gone",
        "evidence": [{"claim": "node-2 refuses connections", "tool_use_id": "toolu_1"}],
        "alternatives": [],
        "confidence": 0.8,
        "recommended": [
            {"action": "restart_node", "params": {"node": "node-1"}, "reason": "restart it"}
        ],
        "risk": "medium",
    }
    for _ in range(3):
        server.script(
            message(tool_use("toolu_1", "observe", {})),
            message(tool_use("toolu_2", "submit_diagnosis", diagnosis)),
        )


async def test_an_action_on_a_healthy_target_waits_for_a_person_even_in_auto(
    tmp_path: Path,
) -> None:
    async with MessagesServer() as server:
        wrong_target_model(server)
        settings = Settings(
            data_dir=tmp_path / "data",
            anthropic_api_key="sk-test-key-0000",
            anthropic_base_url=server.url,
        )
        db_url = f"sqlite:///{tmp_path / 'console.db'}"
        engine: Engine = create_db_engine(db_url)
        init_db(engine)
        scenario = find_scenario("ratelimiter-node-kill")
        # A last chapter long enough for the person to decide while the run still runs.
        scenario = scenario.model_copy(
            update={
                "expect": Expect(invariants=["node_down"], recovers=False),
                "chapters": [*scenario.chapters, Chapter(title="The person decides", duration=12)],
            }
        )
        runtime = Runtime(scenario.plan, settings, engine, brain="claude", mode=Mode.AUTO)
        events: list[Event] = []
        proposed: list[ActionProposed] = []

        def listen(event: Event) -> None:
            events.append(event)
            if isinstance(event, ActionProposed):
                proposed.append(event)

        runtime.bus.add_listener(listen)
        runner = ScenarioRunner(runtime, scenario, pace=0.5, auto_advance=True)
        task = asyncio.create_task(runner.run())
        while not proposed and not task.done():
            await asyncio.sleep(0.05)
        assert proposed, "the model's recommendation was never proposed"
        first = proposed[0]
        assert first.action == "restart_node" and first.params == {"node": "node-1"}
        assert first.decision == "await_approval"
        assert first.why == "node-1 is not implicated by ticket #1 (node_down on node-2)"
        await asyncio.sleep(3)  # an executor that would run it has had three polls
        assert not [e for e in events if isinstance(e, ActionExecuting)]
        await asyncio.to_thread(runtime.decisions.approve, first.action_id, by="person:test")
        while not [e for e in events if isinstance(e, ActionExecuting)] and not task.done():
            await asyncio.sleep(0.05)
        await task

    executing = [e for e in events if isinstance(e, ActionExecuting)]
    assert [e.action_id for e in executing] == [first.action_id]
    row = ActionRepository(engine).get(first.action_id)
    assert row is not None and row.decided_by == "person:test"
    assert row.policy_reason == first.why and row.targets == ["node-1"]
    shown = CliRunner().invoke(main, ["actions", "show", str(first.action_id), "--db", db_url])
    assert shown.exit_code == 0, shown.output
    assert "node-1 is not implicated by ticket #1 (node_down on node-2)" in shown.output
    timeline = json.dumps([e.to_dict() for e in events], default=str)
    assert "node-1 is not implicated" in timeline


def test_link_latency_ends_mitigated_then_resolved_when_the_link_is_repaired(
    run_console,  # type: ignore[no-untyped-def]
) -> None:
    """drain_node hides a slow link (the ticket says what remains); once the scenario repairs
    the link the cause clears, the agent undrains the node and only then is it resolved."""
    timeline = run_console(
        "run",
        "ratelimiter-link-latency",
        "--headless",
        "--quiet",
        "--mode",
        "auto",
        "--brain",
        "rules",
        "--pace",
        "0.5",
    )
    assert timeline.returncode == 0, timeline.story()
    opened = next(
        e
        for e in timeline.named("ticket_opened")
        if e["target"] == "node-1" and e["invariant"] in ("store_link_slow", "store_unreachable")
    )
    mitigated = timeline.first("ticket_mitigated", ticket_id=opened["ticket_id"])
    assert "drain_node on node-1 verified as a mitigation" in mitigated["remains"]
    remains = mitigated["remains"]
    assert "still slow" in remains or "cannot reach the store" in remains, remains
    cleared = timeline.first("cause_cleared", ticket_id=opened["ticket_id"])
    undo = timeline.first("action_proposed", action="undrain_node")
    assert undo["t"] > cleared["t"] > mitigated["t"]
    resolved = timeline.first("ticket_resolved", ticket_id=opened["ticket_id"])
    assert resolved["by"] == "agent" and resolved["action_id"] == undo["action_id"]
    assert resolved["t"] > timeline.first("fault_cleared")["t"]
