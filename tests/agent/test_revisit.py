"""A ticket the agent found nothing to do about, while the monitor still sees it violated: the
agent looks again once the evidence had time to change, and after a few fruitless looks hands
the ticket to a person instead of leaving it open forever."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel
from sqlalchemy.engine import Engine

from operator_console.actions.decisions import Decisions
from operator_console.actions.store import ActionRepository, Controls, Mode
from operator_console.agent import runner
from operator_console.agent.base import BrainResult, Step, StepKind
from operator_console.agent.runner import AgentLoop
from operator_console.audit import AuditLog
from operator_console.contract import (
    ActionCatalog,
    ActionSpec,
    Diagnosis,
    Evidence,
    RecommendedAction,
    TicketContext,
    Toolbox,
)
from operator_console.db import TicketRepository, TranscriptRepository
from operator_console.db.models import TicketRow
from operator_console.domain import Severity, TicketState, Violation, utcnow
from operator_console.domain.bus import EventBus
from operator_console.domain.events import ActionProposed, Event, TicketEscalated, TicketUpdated
from tests.db.claimants import EmptyKit


class _Node(BaseModel):
    node: str


async def _noop(_params: Any) -> str:
    return "done"


CATALOG = ActionCatalog(
    [
        ActionSpec(
            "restart_node",
            "restart",
            _Node,
            "medium",
            ("node_down",),
            5.0,
            _noop,
            target_params=("node",),
        )
    ]
)


class SecondLookBrain:
    """Finds nothing to do until its `finds_after`-th look, then recommends a restart."""

    name = "second-look"

    def __init__(self, finds_after: int) -> None:
        self.finds_after = finds_after
        self.looks = 0

    async def investigate(self, ticket: TicketContext, tools: Toolbox, on_step: Any) -> BrainResult:
        self.looks += 1
        step = Step(StepKind.TOOL_RESULT, tool="observe", tool_use_id="t1", text=ticket.target)
        on_step(step)
        found = self.looks >= self.finds_after
        recommended = [RecommendedAction(action="restart_node", params={"node": ticket.target})]
        diagnosis = Diagnosis(
            summary="s",
            root_cause="the node is slow" if found else "it looks like it passed",
            confidence=0.8,
            evidence=[Evidence(claim=f"{ticket.target} is slow", tool_use_id="t1")],
            recommended=recommended if found else [],
        )
        return BrainResult(diagnosis=diagnosis, steps=[step])


class _Kit(EmptyKit):
    @property
    def actions(self) -> ActionCatalog:
        return CATALOG


def _world(engine: Engine, brain: SecondLookBrain) -> tuple[AgentLoop, list[Event], TicketRow]:
    bus = EventBus()
    events: list[Event] = []
    bus.add_listener(events.append)
    actions = ActionRepository(engine)
    controls = Controls(engine, default_mode=Mode.APPROVE)
    tickets = TicketRepository(engine)
    agent = AgentLoop(
        brain,
        _Kit(),
        tickets=tickets,
        transcript=TranscriptRepository(engine),
        actions=actions,
        controls=controls,
        decisions=Decisions(actions, controls, bus),
        bus=bus,
        run_id="r1",
        audit=AuditLog(engine),
    )
    ticket = tickets.open(
        Violation("slow_member", "node-2", Severity.WARNING, "node-2 is slow"),
        subject="test",
        run_id="r1",
        observation={},
        first_seen=utcnow(),
    )
    return agent, events, ticket


def _still_violated(agent: AgentLoop, ticket_id: int) -> TicketUpdated:
    """What the monitor publishes when an open ticket's numbers change."""
    row = agent.tickets.get(ticket_id)
    assert row is not None
    return TicketUpdated(**row.event_fields())


async def test_a_ticket_still_violated_after_no_action_is_looked_at_again(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    brain = SecondLookBrain(finds_after=2)
    agent, events, ticket = _world(engine, brain)
    assert ticket.id is not None
    await agent.handle(ticket.id)
    assert brain.looks == 1 and not [e for e in events if isinstance(e, ActionProposed)]
    # Too soon: the evidence had no time to change.
    await agent._on(_still_violated(agent, ticket.id))
    assert brain.looks == 1
    monkeypatch.setattr(runner, "REVISIT_AFTER_S", 0.0)
    await agent._on(_still_violated(agent, ticket.id))
    assert brain.looks == 2
    proposed = [e for e in events if isinstance(e, ActionProposed)]
    assert [(p.action, p.params) for p in proposed] == [("restart_node", {"node": "node-2"})]
    # A ticket with a proposal is not looked at again by this path.
    await agent._on(_still_violated(agent, ticket.id))
    assert brain.looks == 2


async def test_after_a_few_fruitless_looks_a_person_gets_the_ticket(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner, "REVISIT_AFTER_S", 0.0)
    brain = SecondLookBrain(finds_after=99)
    agent, events, ticket = _world(engine, brain)
    assert ticket.id is not None
    await agent.handle(ticket.id)
    for _ in range(runner.REVISITS + 2):
        await agent._on(_still_violated(agent, ticket.id))
    assert brain.looks == runner.REVISITS + 1
    escalated = [e for e in events if isinstance(e, TicketEscalated)]
    assert len(escalated) == 1
    assert escalated[0].reason == (
        f"slow_member on node-2 is still violated after {runner.REVISITS + 1} investigations "
        "found nothing to do: a person should look"
    )
    row = agent.tickets.get(ticket.id)
    assert row is not None and row.state == TicketState.ESCALATED.value
