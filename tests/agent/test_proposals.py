"""Scope and blast radius: what makes a proposal wait for a person in auto mode, measured from
what the database holds (actions of this and other processes) and what the investigation saw."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel
from sqlalchemy.engine import Engine

from operator_console.actions.decisions import Decisions
from operator_console.actions.store import ActionRepository, ActionState, Controls, Mode
from operator_console.agent.base import Step, StepKind
from operator_console.agent.proposals import AlreadyUnderWay, Limits, Proposer
from operator_console.agent.scope import Investigation
from operator_console.contract import ActionCatalog, ActionSpec, Diagnosis, Evidence
from operator_console.db import TicketRepository
from operator_console.db.models import TicketRow
from operator_console.domain import Severity, Violation, utcnow
from operator_console.domain.bus import EventBus
from operator_console.domain.events import ActionProposed, Event


class _Node(BaseModel):
    node: str


async def _noop(_params: Any) -> str:
    return "done"


CATALOG = ActionCatalog(
    (
        ActionSpec(
            "restart_node",
            "restart",
            _Node,
            "medium",
            ("node_down",),
            5.0,
            _noop,
            target_params=("node",),
        ),
        ActionSpec(
            "drain_node",
            "drain",
            _Node,
            "low",
            ("latency_slo",),
            5.0,
            _noop,
            target_params=("node",),
        ),
    )
)


@pytest.fixture
def world(engine: Engine) -> tuple[Proposer, list[Event], TicketRepository, ActionRepository]:
    bus = EventBus()
    events: list[Event] = []
    bus.add_listener(events.append)
    actions = ActionRepository(engine)
    controls = Controls(engine, default_mode=Mode.AUTO)
    controls.set_mode(Mode.AUTO, by="test")
    proposer = Proposer(
        CATALOG,
        actions=actions,
        controls=controls,
        decisions=Decisions(actions, controls, bus),
        tickets=TicketRepository(engine),
        bus=bus,
        audit=lambda *_: None,
        run_id="r1",
        actor="agent:rules",
        limits=Limits(auto_per_target=2, window_s=600, after_action_s=60),
    )
    return proposer, events, TicketRepository(engine), actions


def _ticket(repo: TicketRepository, target: str, *, seconds_ago: float = 0) -> TicketRow:
    return repo.open(
        Violation("node_down", target, Severity.CRITICAL, f"{target} is down"),
        subject="test",
        run_id="r1",
        observation={},
        first_seen=utcnow() - timedelta(seconds=seconds_ago),
    )


def _ran(
    actions: ActionRepository,
    ticket: TicketRow,
    node: str,
    *,
    state: ActionState,
    system: str = "r1",
) -> int:
    """An earlier action of the agent on `node` of `system`, approved by the policy, now in
    `state`."""
    spec = CATALOG.get("restart_node")
    row = actions.propose(
        spec,
        {"node": node},
        proposed_by="agent:rules",
        reason="",
        run_id="r1",
        ticket_id=ticket.id,
        system=system,
    )
    assert row.id is not None
    actions.approve(row.id, by="policy")
    if state is not ActionState.APPROVED:
        actions.claim(row.id, Controls(actions._engine, default_mode=Mode.AUTO))
    if state in (ActionState.VERIFIED, ActionState.SUCCEEDED):
        actions.finish(row.id, ActionState.SUCCEEDED, expected=ActionState.EXECUTING)
    if state is ActionState.VERIFIED:
        actions.finish(row.id, ActionState.VERIFIED, expected=ActionState.SUCCEEDED)
    return row.id


def _evidence_for(node: str) -> tuple[Diagnosis, Investigation]:
    steps = [
        Step(StepKind.TOOL_CALL, tool="node_detail", tool_use_id="t1", input={"node": node}),
        Step(
            StepKind.TOOL_RESULT, tool="node_detail", tool_use_id="t1", text=f'{{"name": "{node}"}}'
        ),
    ]
    diagnosis = Diagnosis(
        summary="s",
        root_cause="r",
        confidence=0.9,
        evidence=[Evidence(claim=f"{node} refuses connections", tool_use_id="t1")],
    )
    return diagnosis, Investigation.of(steps)


def _decision(events: list[Event]) -> ActionProposed:
    return [e for e in events if isinstance(e, ActionProposed)][-1]


async def test_the_tickets_own_target_runs_in_auto(world: Any) -> None:
    proposer, events, tickets, _ = world
    ticket = _ticket(tickets, "node-2")
    diagnosis, seen = _evidence_for("node-2")
    await proposer.propose(
        ticket, "restart_node", {"node": "node-2"}, "r", diagnosis=diagnosis, investigation=seen
    )
    assert _decision(events).decision == "execute"


async def test_a_target_the_evidence_ties_to_a_tool_result_is_implicated(world: Any) -> None:
    proposer, events, tickets, _ = world
    ticket = _ticket(tickets, "user:hot")  # a key's ticket, fixed on the node the evidence names
    diagnosis, seen = _evidence_for("node-2")
    await proposer.propose(
        ticket, "restart_node", {"node": "node-2"}, "r", diagnosis=diagnosis, investigation=seen
    )
    assert _decision(events).decision == "execute"


async def test_a_claim_without_a_tool_result_naming_the_target_does_not_implicate_it(
    world: Any,
) -> None:
    proposer, events, tickets, _ = world
    ticket = _ticket(tickets, "node-2")
    diagnosis, seen = _evidence_for("node-2")
    # The claim names node-10, but the result it cites shows only node-2; node-1 is nowhere.
    diagnosis.evidence.append(Evidence(claim="node-10 and node-1 look odd", tool_use_id="t9"))
    await proposer.propose(
        ticket, "restart_node", {"node": "node-1"}, "r", diagnosis=diagnosis, investigation=seen
    )
    proposed = _decision(events)
    assert proposed.decision == "await_approval"
    assert proposed.why == "node-1 is not implicated by ticket #1 (node_down on node-2)"


async def test_no_automatic_action_on_a_target_while_one_on_it_executes(world: Any) -> None:
    proposer, events, tickets, actions = world
    first = _ticket(tickets, "node-2")
    running = _ran(actions, first, "node-2", state=ActionState.EXECUTING)
    second = _ticket(tickets, "node-2")
    diagnosis, seen = _evidence_for("node-2")
    # Another action on the busy target is held for a person.
    await proposer.propose(
        second, "drain_node", {"node": "node-2"}, "r", diagnosis=diagnosis, investigation=seen
    )
    proposed = _decision(events)
    assert proposed.decision == "await_approval"
    assert f"action #{running} (restart_node on node-2) is still executing" in proposed.why
    # The same action again is not queued twice: the ticket waits for the one under way.
    again = await proposer.propose(
        second, "restart_node", {"node": "node-2"}, "r", diagnosis=diagnosis, investigation=seen
    )
    assert isinstance(again, AlreadyUnderWay) and again.action_id == running
    assert len([e for e in events if isinstance(e, ActionProposed)]) == 1


async def test_at_most_n_automatic_actions_per_target_per_window(world: Any) -> None:
    proposer, events, tickets, actions = world
    diagnosis, seen = _evidence_for("node-2")
    for _ in range(2):
        earlier = _ticket(tickets, "node-2", seconds_ago=300)
        _ran(actions, earlier, "node-2", state=ActionState.VERIFIED)
    ticket = _ticket(tickets, "node-2", seconds_ago=0)
    await proposer.propose(
        ticket, "restart_node", {"node": "node-2"}, "r", diagnosis=diagnosis, investigation=seen
    )
    proposed = _decision(events)
    assert proposed.decision == "await_approval"
    assert "node-2 already had 2 automatic action(s) in the last 600 s (at most 2)" in proposed.why
    # The same node name on another system (another run's lab) is another node.
    elsewhere = _ticket(tickets, "node-4", seconds_ago=300)
    for _ in range(2):
        _ran(actions, elsewhere, "node-4", state=ActionState.VERIFIED, system="another-lab")
    fourth = _ticket(tickets, "node-4")
    diagnosis4, seen4 = _evidence_for("node-4")
    await proposer.propose(
        fourth, "restart_node", {"node": "node-4"}, "r", diagnosis=diagnosis4, investigation=seen4
    )
    assert _decision(events).decision == "execute"
    other = _ticket(tickets, "node-3")
    diagnosis3, seen3 = _evidence_for("node-3")
    await proposer.propose(
        other, "restart_node", {"node": "node-3"}, "r", diagnosis=diagnosis3, investigation=seen3
    )
    assert _decision(events).decision == "execute"  # the budget is per target


async def test_a_ticket_opened_right_after_the_agent_acted_on_its_target_is_a_persons(
    world: Any,
) -> None:
    proposer, events, tickets, actions = world
    cause = _ticket(tickets, "node-2", seconds_ago=30)
    acted = _ran(actions, cause, "node-1", state=ActionState.VERIFIED)
    after = _ticket(tickets, "node-1", seconds_ago=0)
    found = proposer.after_action(after)
    assert found is not None and found.id == acted
    tickets.mark_after_action(after.id, acted)
    after = tickets.get(after.id)
    diagnosis, seen = _evidence_for("node-1")
    await proposer.propose(
        after, "restart_node", {"node": "node-1"}, "r", diagnosis=diagnosis, investigation=seen
    )
    proposed = _decision(events)
    assert proposed.decision == "await_approval"
    assert f"opened after the agent's action #{acted} on node-1" in proposed.why
    # A ticket on a target the agent did not touch lately is not marked.
    assert proposer.after_action(_ticket(tickets, "node-3")) is None


async def test_the_kill_switch_and_observe_win_over_everything(world: Any, engine: Engine) -> None:
    proposer, events, tickets, _ = world
    ticket = _ticket(tickets, "node-2")
    diagnosis, seen = _evidence_for("node-2")
    Controls(engine).set_kill_switch(True, by="test")
    assert (
        await proposer.propose(
            ticket, "restart_node", {"node": "node-2"}, "r", diagnosis=diagnosis, investigation=seen
        )
        is False
    )
    assert _decision(events).decision == "propose_only"
