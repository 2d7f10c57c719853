"""A real monitor and a real executor over one deployment, on a fresh SQLite database: tests
propose an action for a ticket the monitor opened, approve it as a person would, and read what
the executor did from the events it published."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from operator_console.actions.decisions import Decisions
from operator_console.actions.executor import Executor, Verifier
from operator_console.actions.store import ActionRepository, Controls
from operator_console.contract import ActionCatalog, Deployment
from operator_console.db import TicketRepository, create_db_engine, init_db
from operator_console.db.models import ActionRow, TicketRow
from operator_console.domain.bus import EventBus
from operator_console.domain.events import (
    ActionEvent,
    ActionFailed,
    ActionNotVerified,
    ActionVerified,
    Event,
    TicketOpened,
)
from operator_console.monitor.loop import Monitor

RUN = "harness"
FINAL = (ActionFailed, ActionVerified, ActionNotVerified)


@dataclass
class Loops:
    """The loops of one run and every event they published."""

    deployment: Deployment
    catalog: ActionCatalog
    bus: EventBus
    tickets: TicketRepository
    actions: ActionRepository
    controls: Controls
    decisions: Decisions
    events: list[Event] = field(default_factory=list)

    async def next(self, kind: type[Event], timeout: float = 20.0, **fields: Any) -> Event:
        """The first event of `kind` with these fields, waiting for it on the bus."""
        async with self.bus.subscribe() as queue:
            for event in self.events:
                if isinstance(event, kind) and _has(event, fields):
                    return event
            async with asyncio.timeout(timeout):
                while True:
                    event = await queue.get()
                    if isinstance(event, kind) and _has(event, fields):
                        return event

    async def ticket(self, invariant: str, target: str, timeout: float = 20.0) -> TicketRow:
        opened = await self.next(TicketOpened, timeout, invariant=invariant, target=target)
        assert isinstance(opened, TicketOpened)
        row = await asyncio.to_thread(self.tickets.get, opened.ticket_id)
        assert row is not None
        return row

    async def propose(self, ticket: TicketRow, name: str, params: dict[str, Any]) -> ActionRow:
        """Record a proposal as the agent would (a chain with its steps)."""
        plan = self.catalog.plan(name, params)
        return await asyncio.to_thread(
            self.actions.propose,
            plan.spec,
            plan.params_json(),
            proposed_by="agent:test",
            reason="test",
            run_id=RUN,
            ticket_id=ticket.id,
            restores=ticket.dedup_key,
            targets=plan.targets(),
            risk=plan.risk,
            steps=plan.describe_steps() or None,
        )

    async def approve_and_wait(self, row: ActionRow, timeout: float = 120.0) -> ActionEvent:
        """Approve as a person and wait for the action's last word (failed or verified)."""
        assert row.id is not None
        async with self.bus.subscribe() as queue:
            await asyncio.to_thread(self.decisions.approve, row.id, by="person:test")
            async with asyncio.timeout(timeout):
                while True:
                    event = await queue.get()
                    if isinstance(event, FINAL) and event.action_id == row.id:
                        return event

    async def stored(self, action_id: int | None) -> ActionRow:
        assert action_id is not None
        row = await asyncio.to_thread(self.actions.get, action_id)
        assert row is not None
        return row

    def of(self, kind: type[Event], **fields: Any) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind) and _has(e, fields)]


def _has(event: Event, fields: dict[str, Any]) -> bool:
    return all(getattr(event, k, None) == v for k, v in fields.items())


@contextlib.asynccontextmanager
async def loops(
    deployment: Deployment,
    db_dir: Path,
    *,
    interval: float = 0.25,
    catalog: ActionCatalog | None = None,
) -> AsyncIterator[Loops]:
    """Run a monitor and an executor over `deployment` (with its own catalog, or `catalog`)
    until the block ends."""
    assert deployment.agent is not None
    engine = create_db_engine(f"sqlite:///{db_dir / 'harness.db'}")
    init_db(engine)
    bus = EventBus()
    bus.bind_loop()
    tickets, actions = TicketRepository(engine), ActionRepository(engine)
    controls = Controls(engine)
    catalog = catalog or deployment.agent.actions
    made = Loops(
        deployment, catalog, bus, tickets, actions, controls, Decisions(actions, controls, bus)
    )
    bus.add_listener(made.events.append)
    monitor = Monitor(deployment.subject, tickets, bus, run_id=RUN, interval=interval)
    executor = Executor(
        actions,
        controls,
        tickets,
        catalog,
        bus,
        Verifier(bus, clean_ticks=2, timeout_s=30),
        run_id=RUN,
        poll_s=0.2,
    )
    tasks = [asyncio.create_task(monitor.run()), asyncio.create_task(executor.run())]
    try:
        yield made
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await executor.stop()
        engine.dispose()
