"""Processes that compete for one database's work: a real `Executor` loop, a real `AgentLoop`.

Each runs in its own process (multiprocessing, spawn) against the URL it is given and writes
what it did to its own file, one line per event, so the test can count across processes.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlmodel import Session, col, func, select

from operator_console.actions.decisions import Decisions
from operator_console.actions.executor import Executor, Verifier
from operator_console.actions.store import ActionRepository, ActionState, ClaimLost, Controls
from operator_console.agent.base import BrainResult, Step, StepKind
from operator_console.agent.runner import AgentLoop
from operator_console.audit import AuditLog
from operator_console.contract import (
    ActionCatalog,
    ActionSpec,
    Hypothesis,
    TicketContext,
    Toolbox,
)
from operator_console.db import TicketRepository, TranscriptRepository, create_db_engine
from operator_console.db.models import ActionRow
from operator_console.domain.bus import EventBus

RUN_ID = "run-shared"


class NodeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    node: str


class Journal:
    """Lines appended to a file as they happen, flushed each time."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("a", buffering=1)

    def write(self, *words: object) -> None:
        self._file.write(" ".join(str(w) for w in words) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def restart_spec(run: Any) -> ActionSpec:
    return ActionSpec(
        name="restart_node",
        description="restart a node",
        params=NodeParams,
        risk="medium",
        restores=("node_down",),
        timeout_s=10,
        run=run,
        retry=False,
        verify=False,  # nothing is observed here; the action's own run is what is counted
    )


class RecordingActions(ActionRepository):
    """The real repository, writing down how each of this process's claims ended."""

    def __init__(self, engine: Any, journal: Journal) -> None:
        super().__init__(engine)
        self.journal = journal

    def claim(self, action_id: int, controls: Controls) -> ActionRow:
        try:
            row = super().claim(action_id, controls)
        except ClaimLost:
            self.journal.write("lost", action_id)
            raise
        except Exception as exc:
            self.journal.write("error", action_id, type(exc).__name__)
            raise
        self.journal.write("won", action_id)
        return row


def _unfinished(engine: Any) -> int:
    waiting = [ActionState.APPROVED.value, ActionState.EXECUTING.value]
    with Session(engine) as session:
        return session.exec(
            select(func.count()).select_from(ActionRow).where(col(ActionRow.state).in_(waiting))
        ).one()


async def _executor_main(url: str, out: Path, worker: int, start: Any) -> None:
    engine = create_db_engine(url)
    pid = os.getpid()
    executions = Journal(out / f"executions-{worker}.txt")
    claims = Journal(out / f"claims-{worker}.txt")

    async def restart(params: NodeParams) -> str:
        executions.write(pid, params.node)
        return f"restarted {params.node}"

    bus = EventBus()
    bus.bind_loop()
    executor = Executor(
        RecordingActions(engine, claims),
        Controls(engine),
        TicketRepository(engine),
        ActionCatalog([restart_spec(restart)]),
        bus,
        Verifier(bus, clean_ticks=1, timeout_s=1.0),
        run_id=RUN_ID,
        poll_s=0.05,
    )
    start.wait(60)
    loop = asyncio.create_task(executor.run())
    try:
        # Nothing tells this process when the other one finished an action: read the database.
        while await asyncio.to_thread(_unfinished, engine):
            await asyncio.sleep(0.05)
    finally:
        loop.cancel()
        await executor.stop()
        executions.close()
        claims.close()
        engine.dispose()


def run_executor(url: str, out: str, worker: int, start: Any) -> None:
    """One executor process: runs its loop until no action of the run waits or runs."""
    asyncio.run(_executor_main(url, Path(out), worker, start))


class RecordingBrain:
    """A brain that writes down each investigation it makes and then asks for a person."""

    name = "recorder"

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    async def investigate(self, ticket: TicketContext, tools: Toolbox, on_step: Any) -> BrainResult:
        self.journal.write(os.getpid(), "start", ticket.ticket_id)
        on_step(Step(StepKind.REASONING, text=f"looking at {ticket.target}"))
        self.journal.write(os.getpid(), "end", ticket.ticket_id)
        return BrainResult(diagnosis=None, steps=[], escalation="a person looks at it")


class EmptyKit:
    """A subject's agent kit with nothing in it: the brain here needs no tools."""

    @property
    def actions(self) -> ActionCatalog:
        return ActionCatalog([])

    @property
    def runbook(self) -> str:
        return ""

    @property
    def context(self) -> str:
        return ""

    def toolbox(self) -> Toolbox:
        return Toolbox()

    def hypotheses(self, invariant: str) -> Sequence[Hypothesis]:
        return ()


async def _agent_main(url: str, out: Path, worker: int, start: Any) -> None:
    engine = create_db_engine(url)
    journal = Journal(out / f"investigations-{worker}.txt")
    bus = EventBus()
    bus.bind_loop()
    actions = ActionRepository(engine)
    controls = Controls(engine)
    tickets = TicketRepository(engine)
    agent = AgentLoop(
        RecordingBrain(journal),
        EmptyKit(),
        tickets=tickets,
        transcript=TranscriptRepository(engine),
        actions=actions,
        controls=controls,
        decisions=Decisions(actions, controls, bus),
        bus=bus,
        run_id=RUN_ID,
        audit=AuditLog(engine),
    )
    start.wait(60)
    try:
        # What AgentLoop.run does first: every unresolved ticket of the run, oldest first.
        for ticket in await asyncio.to_thread(tickets.unresolved, RUN_ID):
            assert ticket.id is not None
            await agent.handle(ticket.id)
    finally:
        await agent.close()
        journal.close()
        engine.dispose()


def run_agent(url: str, out: str, worker: int, start: Any) -> None:
    """One agent process: takes every open ticket of the run it can hold."""
    asyncio.run(_agent_main(url, Path(out), worker, start))
