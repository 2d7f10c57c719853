"""Claude on an etcd ticket: the real `anthropic` SDK against the local Messages server (the
model's replies are scripted), a real 3-member etcd cluster with member-2 frozen by SIGSTOP.
The model gets etcd's tools, context and runbook, its tool call reads the real cluster, and
what it recommends goes through the policy: the implicated member is resumed in auto mode, a
healthy member's restart waits for a person."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from operator_console.actions.store import ActionRepository, Mode
from operator_console.db import create_db_engine, init_db
from operator_console.domain.events import (
    ActionExecuting,
    ActionProposed,
    ActionVerified,
    AgentReady,
    Event,
    FaultInjected,
    TicketOpened,
    TicketResolved,
)
from operator_console.runtime import Runtime
from operator_console.scenarios import find_scenario
from operator_console.scenarios.runner import ScenarioRunner
from operator_console.settings import Settings
from tests.agent.messages_server import MessagesServer, Reply, message, text, tool_use
from tests.subjects.etcd.conftest import etcd_or_skip

pytestmark = pytest.mark.integration

ETCD_TOOLS = {"cluster_status", "member_detail", "member_metrics", "alarms", "member_list"}


PAUSED = {
    "summary": "member-2 holds its ports but answers nothing: its process is stopped.",
    "root_cause": "member-2's process is paused (SIGSTOP)",
    "label": "member_process_paused",
    "evidence": [{"claim": "member-2's process is paused", "tool_use_id": "toolu_1"}],
    "alternatives": [
        {
            "hypothesis": "member-2's process died",
            "rejected_because": "it has a pid and is paused",
        }
    ],
    "confidence": 0.9,
    "recommended": [
        {"action": "resume_member", "params": {"member": "member-2"}, "reason": "SIGCONT"},
        {"action": "restart_member", "params": {"member": "member-1"}, "reason": "to be safe"},
    ],
    "risk": "low",
}


def etcd_model(body: dict[str, Any]) -> Reply:
    """A model that reads member-2 first; on member_down it recommends resuming member-2 and
    (wrongly) restarting member-1 too; any other ticket (a busy machine's slow second) it
    explains and leaves alone."""
    messages = body["messages"]
    if len(messages) == 1:
        return message(
            text("Reading member-2."), tool_use("toolu_1", "member_detail", {"member": "member-2"})
        )
    first = messages[0]["content"]
    ticket = first if isinstance(first, str) else " ".join(b.get("text", "") for b in first)
    if re.search(r'"invariant":\s*"member_down"', ticket):
        diagnosis = PAUSED
    else:
        diagnosis = {
            "summary": "Nothing this console should act on.",
            "root_cause": "not established",
            "evidence": [{"claim": "member-2 as read", "tool_use_id": "toolu_1"}],
            "confidence": 0.3,
            "recommended": [],
        }
    return message(tool_use("toolu_2", "submit_diagnosis", diagnosis))


def tool_result(request_body: dict[str, Any], tool_use_id: str) -> dict[str, Any]:
    for turn in request_body["messages"]:
        if turn["role"] != "user" or isinstance(turn["content"], str):
            continue
        for block in turn["content"]:
            if block.get("type") == "tool_result" and block["tool_use_id"] == tool_use_id:
                content = block["content"]
                raw = content if isinstance(content, str) else content[0]["text"]
                start = raw.index("{")
                end = raw.rindex("}") + 1
                found: dict[str, Any] = json.loads(raw[start:end])
                return found
    raise AssertionError(f"no tool_result for {tool_use_id}")


async def test_claude_reads_a_real_etcd_member_and_its_recommendations_meet_the_policy(
    tmp_path: Path,
) -> None:
    etcd_or_skip()
    async with MessagesServer() as server:
        server.respond_with(etcd_model)
        settings = Settings(
            data_dir=tmp_path / "data",
            anthropic_api_key="sk-test-key-0000",
            anthropic_base_url=server.url,
        )
        engine: Engine = create_db_engine(f"sqlite:///{tmp_path / 'console.db'}")
        init_db(engine)
        scenario = find_scenario("etcd-member-pause")
        runtime = Runtime(scenario.plan, settings, engine, brain="claude", mode=Mode.AUTO)
        events: list[Event] = []
        runtime.bus.add_listener(events.append)
        members: dict[str, Any] = {}

        def remember_pids(event: Event) -> None:
            if isinstance(event, FaultInjected) and runtime.deployment is not None:
                members.update(runtime.deployment.lab.endpoints()["members"])

        runtime.bus.add_listener(remember_pids)
        outcome = await ScenarioRunner(runtime, scenario, pace=0.5).run()

    assert outcome.ok, outcome.summary
    assert next(e for e in events if isinstance(e, AgentReady)).brain == "claude"
    opened = next(e for e in events if isinstance(e, TicketOpened) and e.invariant == "member_down")
    assert opened.target == "member-2"

    # The model was given etcd's tools, its context and its runbook, not another subject's.
    asked = [
        r.body
        for r in server.requests
        if f"Investigate ticket #{opened.ticket_id} " in json.dumps(r.body["messages"][0])
    ]
    first, second = asked[0], asked[1]
    offered = {tool["name"] for tool in first["tools"]}
    assert ETCD_TOOLS <= offered and "restart_node" not in json.dumps(first["tools"])
    prompt = json.dumps(first["messages"][0]["content"])
    assert "An etcd cluster of 3 members (member-1, member-2, member-3)" in prompt  # context
    assert "the console started these members itself" in prompt.lower()
    assert "Process paused (SIGSTOP): the process is paused and reads time out." in prompt
    assert "member_process_paused" in prompt  # the runbook's labels for member_down

    # Its tool call read the real cluster: member-2's real pid, frozen.
    detail = tool_result(second, "toolu_1")
    assert detail["name"] == "member-2" and detail["process"] == "paused"
    assert detail["pid"] == members["member-2"]["pid"]

    # Through the policy: the implicated member ran at once; the healthy one waits for a person.
    proposed = {
        e.action: e
        for e in events
        if isinstance(e, ActionProposed) and e.ticket_id == opened.ticket_id
    }
    assert proposed["resume_member"].decision == "execute"
    restart = proposed["restart_member"]
    assert restart.decision == "await_approval"
    assert restart.why.startswith("member-1 is not implicated by ticket #"), restart.why
    executed = [e.action for e in events if isinstance(e, ActionExecuting)]
    assert executed == ["resume_member"]
    verified = next(e for e in events if isinstance(e, ActionVerified))
    assert verified.action == "resume_member" and verified.ticket_id == opened.ticket_id
    resolved = next(
        e for e in events if isinstance(e, TicketResolved) and e.ticket_id == opened.ticket_id
    )
    assert resolved.by == "agent"
    rows = {row.name: row for row in ActionRepository(engine).find(limit=20)}
    assert rows["restart_member"].state != "executed" and rows["restart_member"].decided_by is None
    assert outcome.summary["ground_truth"]["lost_writes"] == 0
