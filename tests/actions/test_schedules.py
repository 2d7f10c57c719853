"""Approvals for later and maintenance windows, with the clock in the test's hands (nothing here
sleeps): a scheduled action runs at its time and not before; a window defers a high-risk action
a person approved; the kill switch cancels what is scheduled; a ticket that closed meanwhile
cancels its fix instead of running it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import BaseModel, ConfigDict
from sqlalchemy.engine import Engine

from operator_console.actions.decisions import Decisions
from operator_console.actions.executor import Executor, Verifier
from operator_console.actions.store import ActionRepository, ActionState, Controls, Mode
from operator_console.cli import main
from operator_console.contract import ActionCatalog, ActionSpec
from operator_console.db import TicketRepository
from operator_console.db.models import ActionRow
from operator_console.domain import Severity, TicketState, Violation
from operator_console.domain.bus import EventBus
from operator_console.domain.events import ActionScheduled, Event
from operator_console.domain.windows import Windows

# A Thursday at 10:00 UTC; the window opens on Saturday at 02:00.
THURSDAY = datetime(2026, 12, 10, 10, 0, tzinfo=UTC)
WINDOW = "Sat 02:00-04:00 UTC"


class NodeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    node: str


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class World:
    """One database, an executor driven by hand (poll by poll) and what ran."""

    def __init__(self, engine: Engine, clock: Clock) -> None:
        self.clock = clock
        self.ran: list[str] = []
        self.events: list[Event] = []
        self.bus = EventBus()
        self.bus.add_listener(self.events.append)
        self.actions = ActionRepository(engine, clock=clock)
        self.controls = Controls(engine, default_mode=Mode.APPROVE)
        self.tickets = TicketRepository(engine)
        self.decisions = Decisions(
            self.actions, self.controls, self.bus, windows=Windows.parse(WINDOW)
        )
        specs = [self._spec("restart_node", "medium"), self._spec("wipe_node", "high")]
        self.executor = Executor(
            self.actions,
            self.controls,
            self.tickets,
            ActionCatalog(tuple(specs)),
            self.bus,
            Verifier(self.bus, clean_ticks=1, timeout_s=1),
            run_id="r1",
        )

    def _spec(self, name: str, risk: str) -> ActionSpec:
        async def run(params: NodeParams) -> str:
            self.ran.append(f"{name} {params.node}")
            return "done"

        return ActionSpec(
            name,
            name,
            NodeParams,
            risk,
            ("node_down",),
            5.0,
            run,
            verify=False,  # type: ignore[arg-type]
        )

    def propose(self, name: str) -> ActionRow:
        ticket = self.tickets.open(
            Violation("node_down", "node-2", Severity.CRITICAL, "node-2 is down"),
            subject="test",
            run_id="r1",
            observation={},
            first_seen=self.clock.now,
        )
        spec = self.executor.catalog.get(name)
        return self.actions.propose(
            spec,
            {"node": "node-2"},
            proposed_by="agent:test",
            reason="r",
            run_id="r1",
            ticket_id=ticket.id,
            restores=ticket.dedup_key,
        )

    async def tick(self) -> None:
        """One executor poll, and whatever it started, to its end."""
        await self.executor.poll()
        running = list(self.executor._running.values())
        if running:
            await asyncio.gather(*running)

    def state(self, row: ActionRow) -> str:
        assert row.id is not None
        found = self.actions.get(row.id)
        assert found is not None
        return found.state


@pytest.fixture
def world(engine: Engine) -> World:
    return World(engine, Clock(THURSDAY))


async def test_a_scheduled_action_runs_at_its_time_and_not_before(world: World) -> None:
    row = world.propose("restart_node")
    assert row.id is not None
    world.decisions.approve(row.id, by="person:test", at=THURSDAY + timedelta(minutes=30))
    assert world.state(row) == ActionState.SCHEDULED.value
    scheduled = [e for e in world.events if isinstance(e, ActionScheduled)]
    assert [e.runs_at for e in scheduled] == [(THURSDAY + timedelta(minutes=30)).isoformat()]
    world.clock.now = THURSDAY + timedelta(minutes=29, seconds=59)
    await world.tick()
    assert world.ran == [] and world.state(row) == ActionState.SCHEDULED.value
    world.clock.now = THURSDAY + timedelta(minutes=30)
    await world.tick()
    assert world.ran == ["restart_node node-2"]
    assert world.state(row) == ActionState.SUCCEEDED.value


async def test_a_window_defers_a_high_risk_action_unless_a_person_says_now(world: World) -> None:
    high = world.propose("wipe_node")
    assert high.id is not None
    world.decisions.approve(high.id, by="person:test")
    stored = world.actions.get(high.id)
    assert stored is not None and stored.state == ActionState.SCHEDULED.value
    saturday = datetime(2026, 12, 12, 2, 0, tzinfo=UTC)
    assert stored.scheduled_for == saturday
    assert stored.policy_reason.endswith(
        f"high risk: waits for the maintenance window ({WINDOW}), next open "
        "Sat 2026-12-12 02:00:00 UTC; approve with --now to run it at once"
    )
    # The approval lasts from when it may run, not from when it was given.
    world.clock.now = saturday - timedelta(seconds=1)
    await world.tick()
    assert world.ran == []
    world.clock.now = saturday + timedelta(minutes=5)
    await world.tick()
    assert world.ran == ["wipe_node node-2"]
    # A medium-risk action is not held by the window; a high one approved with --now is not.
    medium, urgent = world.propose("restart_node"), world.propose("wipe_node")
    world.clock.now = THURSDAY
    assert medium.id is not None and urgent.id is not None
    world.decisions.approve(medium.id, by="person:test")
    world.decisions.approve(urgent.id, by="person:test", run_now=True)
    assert world.state(medium) == world.state(urgent) == ActionState.APPROVED.value


async def test_the_kill_switch_cancels_a_scheduled_action(world: World) -> None:
    row = world.propose("wipe_node")
    assert row.id is not None
    world.decisions.approve(row.id, by="person:test")
    assert world.state(row) == ActionState.SCHEDULED.value
    world.controls.set_kill_switch(True, by="person:test")
    assert world.state(row) == ActionState.CANCELLED.value
    world.clock.now = datetime(2026, 12, 12, 2, 30, tzinfo=UTC)
    await world.tick()
    assert world.ran == []


async def test_a_ticket_closed_before_the_time_cancels_its_fix(world: World) -> None:
    row = world.propose("restart_node")
    assert row.id is not None and row.ticket_id is not None
    world.decisions.approve(row.id, by="person:test", at=THURSDAY + timedelta(hours=1))
    world.tickets.set_state(row.ticket_id, TicketState.RESOLVED)
    world.clock.now = THURSDAY + timedelta(hours=1, minutes=1)
    await world.tick()
    assert world.ran == []
    stored = world.actions.get(row.id)
    assert stored is not None and stored.state == ActionState.CANCELLED.value
    assert (
        stored.decision_reason == f"ticket #{row.ticket_id} was resolved before the action's time"
    )


def test_the_cli_approves_for_later_and_names_the_time(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = World(engine, Clock(datetime.now(UTC)))
    row = world.propose("restart_node")
    url = str(engine.url)
    monkeypatch.delenv("OPERATOR_CONSOLE_DB", raising=False)
    runner = CliRunner()
    result = runner.invoke(
        main, ["actions", "approve", str(row.id), "--after", "1h30m", "--db", url]
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"scheduled action {row.id} to run at ")
    stored = world.actions.get(row.id or 0)
    assert stored is not None and stored.scheduled_for is not None
    assert abs((stored.scheduled_for - datetime.now(UTC)) - timedelta(minutes=90)) < timedelta(
        seconds=30
    )
    listed = runner.invoke(main, ["actions", "list", "--db", url])
    assert f"scheduled {stored.scheduled_for:%a %H:%M} UTC" in listed.output
    for bad, words in (
        (["--after", "soon"], "'soon' is not a duration"),
        (["--at", "2026-12-12T02:00"], "has no time zone"),
        (["--at", "25:00"], "'25:00' is not a time of day"),
        (["--at", "02:00", "--now"], "give at most one of --at, --after and --now"),
    ):
        failed = runner.invoke(main, ["actions", "approve", str(row.id), *bad, "--db", url])
        assert failed.exit_code == 2 and words in failed.output, failed.output
