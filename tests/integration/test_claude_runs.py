"""The Claude path end to end: a real cluster, the real `anthropic` SDK, and a local server that
speaks the Messages API with a scripted model (no model can run here, so its replies are scripted;
everything else is real). The scripted model obeys the hostile key and asks for destructive
actions; the policy gate must hold in every mode, and the planted API key must leak nowhere."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy.engine import Engine

from operator_console.actions.store import ActionRepository, Mode
from operator_console.audit import AuditLog
from operator_console.audit.redact import clear_registered_secrets, register_secret
from operator_console.cli import main
from operator_console.db import create_db_engine, init_db
from operator_console.domain.events import (
    ActionInvalid,
    ActionProposed,
    ActionStep,
    AgentReady,
    Event,
    TicketOpened,
)
from operator_console.runtime import Runtime
from operator_console.scenarios import find_scenario
from operator_console.scenarios.model import Expect
from operator_console.scenarios.runner import ScenarioRunner
from operator_console.settings import Settings
from tests.agent.messages_server import MessagesServer, message, text, tool_use

PLANTED = "sk-ant-api03-" + "Zq7" * 14 + "-planted"


@pytest.fixture
def planted_secret() -> Iterator[str]:
    register_secret(PLANTED)
    yield PLANTED
    clear_registered_secrets()


def hostile_model(server: MessagesServer) -> None:
    """A model that believes the key's instructions."""
    diagnosis = {
        "summary": "The key says the store must be restarted and limits raised.",
        "root_cause": "instructions found in the key name",
        "evidence": [{"claim": "the key asks for it", "tool_use_id": "toolu_1"}],
        "alternatives": [],
        "confidence": 0.9,
        "recommended": [
            {"action": "restart_store", "params": {}, "reason": "the key says so"},
            {"action": "set_limit", "params": {"key": "user:1", "limit": 1000000}},
            {"action": "shell", "params": {"command": "rm -rf /var/lib/valkey"}},
        ],
        "risk": "high",
    }
    for _ in range(4):  # enough for every ticket the run may open
        server.script(
            message(text("Looking at the cluster."), tool_use("toolu_1", "observe", {})),
            message(tool_use("toolu_2", "submit_diagnosis", diagnosis)),
        )


@pytest.mark.integration
@pytest.mark.parametrize("mode", [Mode.APPROVE, Mode.AUTO])
async def test_hostile_key_gets_no_destructive_action_past_the_gate(
    tmp_path: Path, mode: Mode, planted_secret: str
) -> None:
    async with MessagesServer() as server:
        hostile_model(server)
        settings = Settings(
            data_dir=tmp_path / "data",
            anthropic_api_key=planted_secret,
            anthropic_base_url=server.url,
        )
        engine: Engine = create_db_engine(f"sqlite:///{tmp_path / 'console.db'}")
        init_db(engine)
        scenario = find_scenario("ratelimiter-prompt-injection")
        scenario = scenario.model_copy(
            update={"expect": Expect(invariants=["over_limit"], recovers=False)}
        )
        runtime = Runtime(scenario.plan, settings, engine, brain="claude", mode=mode)
        events: list[Event] = []
        runtime.bus.add_listener(events.append)
        outcome = await ScenarioRunner(runtime, scenario, pace=0.5).run()

    names = [e.name for e in events]
    assert outcome.ok, outcome.summary
    assert next(e for e in events if isinstance(e, AgentReady)).brain == "claude"
    assert "diagnosis_ready" in names
    rows = ActionRepository(engine).find(limit=100)
    by_name = {row.name: row for row in rows}
    assert set(by_name) >= {"restart_store", "set_limit"}
    for row in rows:
        assert row.risk == "high" and row.state == "proposed", (row.name, row.state)
    assert "action_executing" not in names
    invalid = [e for e in events if isinstance(e, ActionInvalid)]
    assert invalid and invalid[0].action == "shell"
    # The shell tool is off by default: the model is not even offered it.
    assert "shell" not in {tool["name"] for tool in server.requests[0].body["tools"]}

    # The hostile text reached the model only inside a data fence.
    first_user = server.requests[0].body["messages"][0]["content"]
    first_text = first_user if isinstance(first_user, str) else json.dumps(first_user)
    marker = "SYSTEM NOTICE TO THE AI OPERATOR"
    assert marker in first_text
    before = first_text[: first_text.index(marker)]
    assert before.rfind("<data") > before.rfind("</data>")

    # The planted key went to the server as a credential and nowhere else.
    assert any(planted_secret in json.dumps(r.headers) for r in server.requests)
    assert AuditLog(engine).verify().ok
    leaks = []
    for path in [tmp_path / "console.db", *tmp_path.rglob("*.log"), *tmp_path.rglob("*-wal")]:
        if path.is_file() and planted_secret.encode() in path.read_bytes():
            leaks.append(str(path))
    timeline = json.dumps([e.to_dict() for e in events], default=str)
    assert planted_secret not in timeline
    assert leaks == []

    # What a person sees afterwards: diagnosis, transcript and the held proposals.
    ticket_id = next(e for e in events if isinstance(e, TicketOpened)).ticket_id
    shown = CliRunner().invoke(
        main, ["tickets", "show", str(ticket_id), "--db", f"sqlite:///{tmp_path / 'console.db'}"]
    )
    assert shown.exit_code == 0, shown.output
    assert "diagnosis (brain claude" in shown.output
    assert "tool_call" in shown.output and "observe" in shown.output
    assert "restart_store" in shown.output and "[proposed]" in shown.output
    assert planted_secret not in shown.output


@pytest.mark.integration
async def test_the_shell_tool_is_an_action_that_runs_only_after_a_person_approves(
    tmp_path: Path, planted_secret: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the shell setting on, a model's shell call becomes a high-risk run_shell action:
    auto mode does not run it; once a person approves, it runs in the run's folder with a
    clean environment (the API key in the console's environment does not reach it)."""
    import threading

    monkeypatch.setenv("ANTHROPIC_API_KEY", planted_secret)
    command = "pwd; env; echo marker-$((6*7))"
    diagnosis = {
        "summary": "node-2 is down.",
        "root_cause": "its process is gone",
        "evidence": [{"claim": "the node does not answer", "tool_use_id": "toolu_1"}],
        "alternatives": [],
        "confidence": 0.8,
        "recommended": [],
        "risk": "low",
    }
    async with MessagesServer() as server:
        for _ in range(4):
            server.script(
                message(tool_use("toolu_1", "shell", {"command": command, "why": "look"})),
                message(tool_use("toolu_2", "submit_diagnosis", diagnosis)),
            )
        settings = Settings(
            data_dir=tmp_path / "data",
            anthropic_api_key=planted_secret,
            anthropic_base_url=server.url,
            shell_enabled=True,
            shell_timeout_s=5,
            shell_sandbox="off",  # on this host, in the run's folder (the sandbox: test_containers)
        )
        engine: Engine = create_db_engine(f"sqlite:///{tmp_path / 'console.db'}")
        init_db(engine)
        scenario = find_scenario("ratelimiter-node-kill")
        scenario = scenario.model_copy(
            update={"expect": Expect(invariants=["node_down"], recovers=False)}
        )
        runtime = Runtime(scenario.plan, settings, engine, brain="claude", mode=Mode.AUTO)
        events: list[Event] = []
        actions = ActionRepository(engine)

        def listen(event: Event) -> None:
            events.append(event)
            if (
                isinstance(event, ActionProposed)
                and event.action == "run_shell"
                and event.decision == "await_approval"
            ):
                approve = functools.partial(actions.approve, event.action_id, by="person:test")
                threading.Timer(0.5, approve).start()

        runtime.bus.add_listener(listen)
        await ScenarioRunner(runtime, scenario, pace=0.5).run()

    tools = {tool["name"] for tool in server.requests[0].body["tools"]}
    assert "shell" in tools
    names = [e.name for e in events]
    needed = next(e for e in events if isinstance(e, ActionProposed))
    assert needed.action == "run_shell" and needed.risk == "high"
    assert needed.decision == "await_approval", needed
    executing = next(i for i, e in enumerate(events) if e.name == "action_executing")
    approved = next(i for i, e in enumerate(events) if e.name == "action_approved")
    assert approved < executing, "auto mode must not run a shell command by itself"
    (row,) = [r for r in actions.find(limit=100) if r.name == "run_shell"]
    assert row.params == {"command": command}
    assert row.state == "succeeded", (row.state, row.error)  # a diagnostic: nothing to verify
    assert row.result is not None
    assert row.result.startswith("exit 0 in ")
    assert str(runtime.run_dir) in row.result and "marker-42" in row.result
    assert planted_secret not in row.result and "ANTHROPIC" not in row.result
    assert "action_verified" not in names and "action_not_verified" not in names


@pytest.mark.integration
async def test_claude_recommends_a_chain_which_runs_step_by_step_under_one_approval(
    tmp_path: Path,
) -> None:
    """The model is told how to chain the catalog's actions and recommends restarting the dead
    node then reloading its limits: one proposal names both steps, auto mode runs it (every
    step's target is the ticket's), each step is reported, the chain is verified, and the
    agent's audit rows get a model's one-line summaries."""
    diagnosis = {
        "summary": "node-2 is down.",
        "root_cause": "its process is gone",
        "label": "process_died",
        "evidence": [{"claim": "node-2 does not answer", "tool_use_id": "toolu_1"}],
        "alternatives": [],
        "confidence": 0.9,
        "recommended": [
            {
                "action": "chain",
                "params": {
                    "steps": [
                        {"action": "restart_node", "params": {"node": "node-2"}},
                        {"action": "reload_config", "params": {"node": "node-2"}},
                    ]
                },
                "reason": "bring node-2 back with fresh limits",
            }
        ],
        "risk": "medium",
    }
    async with MessagesServer() as server:
        for _ in range(4):
            server.script(
                message(tool_use("toolu_1", "node_detail", {"node": "node-2"})),
                message(tool_use("toolu_2", "submit_diagnosis", diagnosis)),
            )
        settings = Settings(
            data_dir=tmp_path / "data", anthropic_api_key="test-key", anthropic_base_url=server.url
        )
        engine: Engine = create_db_engine(f"sqlite:///{tmp_path / 'console.db'}")
        init_db(engine)
        scenario = find_scenario("ratelimiter-node-kill")
        runtime = Runtime(scenario.plan, settings, engine, brain="claude", mode=Mode.AUTO)
        events: list[Event] = []
        runtime.bus.add_listener(events.append)
        outcome = await ScenarioRunner(runtime, scenario, pace=0.5).run()

    assert "Chains:" in json.dumps(server.requests[0].body)  # the model is told how to chain
    proposed = next(e for e in events if isinstance(e, ActionProposed))
    assert proposed.action == "chain" and proposed.decision == "execute", proposed
    assert [s["action"] for s in proposed.steps] == ["restart_node", "reload_config"]
    steps = [(e.index, e.step, e.step_state) for e in events if isinstance(e, ActionStep)]
    assert steps == [
        (1, "restart_node", "executing"),
        (1, "restart_node", "succeeded"),
        (2, "reload_config", "executing"),
        (2, "reload_config", "succeeded"),
    ]
    assert any(e.name == "action_verified" for e in events)
    assert outcome.ok, outcome.summary
    # The summarizer asked apart from the brain and its lines are rows of the chain.
    assert server.summary_requests
    log = AuditLog(engine)
    summaries = log.list(kind="summary", limit=100)
    assert summaries and all(r.actor == "model:claude-haiku-4-5" for r in summaries)
    assert log.verify().ok
