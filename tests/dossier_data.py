"""One ticket with everything a person looks at afterwards, written through the project's own
repositories: a diagnosis, a transcript with a failed tool call, an approved action and a rejected
one, and the audit rows all of that leaves behind."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from sqlalchemy.engine import Engine

from operator_console.actions.store import ActionRepository
from operator_console.agent.base import Step, StepKind
from operator_console.audit import AuditLog
from operator_console.contract import (
    ActionSpec,
    Alternative,
    Diagnosis,
    Evidence,
    RecommendedAction,
)
from operator_console.db import TicketRepository, TranscriptRepository
from operator_console.db.models import TranscriptRow
from operator_console.domain import Severity, Violation, utcnow

RUN_ID = "run-dossier"
BRAIN = "rules"
ROOT_CAUSE = "node-2 process is not running"
TOOL_RESULT_TEXT = '{"node-2": "connection refused"}'


class NodeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    node: str


async def _never_runs(params: NodeParams) -> str:
    raise AssertionError("the fixture never executes actions")


RESTART = ActionSpec(
    name="restart_node",
    description="restart a node",
    params=NodeParams,
    risk="medium",
    restores=("node_down",),
    timeout_s=5,
    run=_never_runs,
)

STEPS = [
    Step(StepKind.REASONING, text="node-2 stopped answering; check the cluster."),
    Step(StepKind.TOOL_CALL, tool="observe", tool_use_id="toolu_1", input={"node": "node-2"}),
    Step(StepKind.TOOL_RESULT, text=TOOL_RESULT_TEXT, tool="observe", tool_use_id="toolu_1"),
    Step(StepKind.TOOL_CALL, tool="read_logs", tool_use_id="toolu_2", input={"node": "node-9"}),
    Step(
        StepKind.TOOL_RESULT,
        text="unknown node 'node-9'",
        tool="read_logs",
        tool_use_id="toolu_2",
        is_error=True,
    ),
]

DIAGNOSIS = Diagnosis(
    summary="node-2 is down",
    root_cause=ROOT_CAUSE,
    evidence=[Evidence(claim="node-2 refuses connections", tool_use_id="toolu_1")],
    alternatives=[
        Alternative(hypothesis="store unreachable", rejected_because="the other nodes answer")
    ],
    confidence=0.9,
    recommended=[
        RecommendedAction(action="restart_node", params={"node": "node-2"}, reason="bring it up")
    ],
    risk="medium",
)


def seed_ticket(engine: Engine) -> int:
    """The ticket's id; the agent investigated it, proposed two actions, a person decided both."""
    tickets = TicketRepository(engine)
    audit = AuditLog(engine)
    violation = Violation(
        invariant="node_down",
        target="node-2",
        severity=Severity.CRITICAL,
        message="node-2 does not answer /health",
        details={"reason": "connection refused"},
    )
    ticket = tickets.open(
        violation,
        subject="ratelimiter",
        run_id=RUN_ID,
        observation={"at": "2025-01-01T00:00:00+00:00", "sources": {}},
        first_seen=utcnow(),
    )
    assert ticket.id is not None
    ticket_id = ticket.id
    audit.append(
        "ticket_opened", actor="monitor", run_id=RUN_ID, ticket_id=ticket_id, payload={"x": 1}
    )
    assert tickets.hold(ticket_id, by=BRAIN)
    transcript = TranscriptRepository(engine)
    for seq, step in enumerate(STEPS, start=1):
        transcript.append(
            TranscriptRow(
                ticket_id=ticket_id,
                seq=seq,
                brain=BRAIN,
                kind=step.kind.value,
                text=step.text,
                tool=step.tool,
                tool_use_id=step.tool_use_id,
                input=step.input,
                is_error=step.is_error,
                at=step.at,
            )
        )
    tickets.set_diagnosis(ticket_id, DIAGNOSIS.model_dump())
    audit.append(
        "diagnosis_ready",
        actor=f"agent:{BRAIN}",
        run_id=RUN_ID,
        ticket_id=ticket_id,
        payload=DIAGNOSIS.model_dump(),
    )
    actions = ActionRepository(engine)
    kept = actions.propose(
        RESTART,
        {"node": "node-2"},
        proposed_by=f"agent:{BRAIN}",
        reason="node-2 is down",
        run_id=RUN_ID,
        ticket_id=ticket_id,
        restores="node_down:node-2",
    )
    assert kept.id is not None
    actions.approve(kept.id, by="person:test", reason="go")
    dropped = actions.propose(
        RESTART,
        {"node": "node-1"},
        proposed_by=f"agent:{BRAIN}",
        reason="belt and braces",
        run_id=RUN_ID,
        ticket_id=ticket_id,
    )
    assert dropped.id is not None
    actions.reject(dropped.id, by="person:test", reason="node-1 is fine")
    return ticket_id
