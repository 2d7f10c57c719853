"""The dashboard: one scenario run, rendered live from the runtime's event bus."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

from sqlalchemy.engine import Engine
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header
from textual.worker import Worker, WorkerState

from operator_console.actions.store import ApprovalError, Mode
from operator_console.contract import ClusterView, SeriesSpec
from operator_console.domain import events as ev
from operator_console.domain.events import Event
from operator_console.runtime import RunOptions, RunPlan, Runtime
from operator_console.scenarios.model import Scenario
from operator_console.scenarios.runner import RunOutcome, ScenarioRunner
from operator_console.scenarios.scoreboard import Scoreboard
from operator_console.scenarios.watch import WatchRunner
from operator_console.settings import Settings
from operator_console.tui.messages import BusEvent, ObservationUpdate
from operator_console.tui.screens.evals import EvalsScreen
from operator_console.tui.screens.records import AuditScreen, TicketsScreen
from operator_console.tui.widgets.approval import ApprovalModal, ReasonModal
from operator_console.tui.widgets.cluster import ClusterPanel
from operator_console.tui.widgets.narration import NarrationPanel
from operator_console.tui.widgets.scoreboard import ScoreboardPanel
from operator_console.tui.widgets.tickets import TicketsPanel
from operator_console.tui.widgets.transcript import Transcript
from operator_console.tui.widgets.workload import WorkloadPanel

PERSON = "person:console"
MODE_CYCLE = (Mode.OBSERVE, Mode.APPROVE, Mode.AUTO)
LOOPS = frozenset({"monitor", "agent", "executor"})
TICKET_SYNC_S = 5.0


class DashboardScreen(Screen[None]):
    """Cluster, workload, tickets, agent and narration for one run of a scenario."""

    BINDINGS = [
        Binding("space", "next_chapter", "Next chapter", priority=True),
        Binding("right", "next_chapter", "Next chapter", show=False, priority=True),
        Binding("a", "approve", "Approve"),
        Binding("r", "reject", "Reject"),
        Binding("m", "cycle_mode", "Mode"),
        Binding("k", "kill_switch", "Kill switch"),
        Binding("t", "tickets", "Tickets"),
        Binding("l", "audit", "Audit log"),
        Binding("e", "evals", "Evals"),
    ]

    def __init__(
        self,
        scenario: Scenario | None,
        settings: Settings,
        engine: Engine,
        *,
        pace: float = 1.0,
        options: RunOptions | None = None,
        watch: tuple[RunPlan, float | None] | None = None,
    ) -> None:
        super().__init__()
        self.scenario = scenario
        self.engine = engine
        opts = options or RunOptions()
        if scenario is not None:
            plan = scenario.plan
            self.title_text = scenario.title
        else:
            assert watch is not None, "a scenario or a cluster to watch"
            plan = watch[0]
            self.title_text = f"watching {plan.subject}"
        self.runtime = Runtime(
            plan, settings, engine, agent=opts.agent, brain=opts.brain, mode=opts.mode
        )
        self.runtime.spawn = self._spawn_loop
        self.runner: ScenarioRunner | WatchRunner
        if scenario is not None:
            self.runner = ScenarioRunner(self.runtime, scenario, pace=pace, auto_advance=False)
        else:
            assert watch is not None
            self.runner = WatchRunner(self.runtime, duration=watch[1])
        self.decisions = self.runtime.decisions
        self.mode: Mode | None = None
        self.pending: dict[int, dict[str, Any]] = {}
        self.diagnoses: dict[int, dict[str, Any]] = {}
        self.open_tickets: dict[int, tuple[str, str]] = {}
        # Per incident, detected / diagnosed / fixed after how long: from the same events.
        self.scoreboard = Scoreboard()
        self._asking: set[int] = set()
        self._remove_listener = self.runtime.bus.add_listener(self._relay)
        self._worker: Worker[RunOutcome] | None = None
        self._covered_view: ClusterView | None = None
        self._covered_samples = False

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="dashboard"):
            with Vertical(id="left-column"):
                yield ClusterPanel(id="cluster")
                yield WorkloadPanel(id="workload")
                yield TicketsPanel(id="tickets")
            with Vertical(id="right-column"):
                yield NarrationPanel(id="narration")
                yield ScoreboardPanel(id="scoreboard")
                yield Transcript(id="transcript")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = self.title_text
        self._worker = self.run_scenario()
        # The database is the truth (another console or the CLI may change a ticket).
        self.set_interval(TICKET_SYNC_S, self._sync_tickets)

    @work(exclusive=True, group="ticket-sync", exit_on_error=False)
    async def _sync_tickets(self) -> None:
        if not self.is_active:
            return
        rows = await asyncio.to_thread(
            self.runtime.tickets.list, run_id=self.runtime.run_id, limit=100
        )
        panel = self.query_one(TicketsPanel)
        for row in reversed(rows):
            panel.show(row.event_fields(), row.last_seen)

    async def on_unmount(self) -> None:
        """However the screen goes away, the run's processes go with it."""
        await self.stop_run()

    def _relay(self, event: Event) -> None:
        """Bus listener (runs on the app's loop): turn events into messages, nothing more."""
        if isinstance(event, ev.Observed):
            self.post_message(ObservationUpdate(event))
        else:
            self.post_message(BusEvent(event))

    @work(exclusive=True, group="scenario", exit_on_error=False)
    async def run_scenario(self) -> RunOutcome:
        """The same ScenarioRunner the headless run uses; it starts and stops the runtime."""
        return await self.runner.run()

    def _spawn_loop(self, name: str, loop: Coroutine[Any, Any, None]) -> Worker[None]:
        """The runtime's monitor, agent and executor loops, each a worker in its own group."""
        return self.run_worker(loop, name=name, group=name, exclusive=True, exit_on_error=False)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state is not WorkerState.ERROR:
            return
        if event.worker is self._worker:
            self.notify(
                f"the run stopped: {event.worker.error}", title="Run failed", severity="error"
            )
        elif event.worker.group in LOOPS:
            self.notify(
                f"the {event.worker.group} loop stopped: {event.worker.error}",
                title=f"{event.worker.group.capitalize()} failed",
                severity="error",
                timeout=30,
            )

    async def stop_run(self) -> None:
        """Cancel the run and wait until every process it started is gone."""
        worker = self._worker
        if worker is not None and worker.state in (WorkerState.PENDING, WorkerState.RUNNING):
            worker.cancel()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await worker.wait()
        await self.runtime.stop()
        self._remove_listener()

    # --- events -> widgets -------------------------------------------------------------

    # Per-second updates wait while a dialog covers the dashboard: redrawing the dimmed
    # screen behind a modal re-renders all of it, and the person is reading the dialog.

    def on_observation_update(self, message: ObservationUpdate) -> None:
        view = ClusterView.from_dict(message.event.panel)
        if self.is_active:
            self.query_one(ClusterPanel).show_view(view)
        else:
            self._covered_view = view

    def on_screen_resume(self) -> None:
        view, self._covered_view = self._covered_view, None
        with self.app.batch_update():
            if view is not None:
                self.query_one(ClusterPanel).show_view(view)
            if self._covered_samples:
                self._covered_samples = False
                self.query_one(WorkloadPanel).redraw()

    def on_bus_event(self, message: BusEvent) -> None:
        event = message.event
        with self.app.batch_update():
            if isinstance(event, ev.WorkloadSampled):
                workload = self.query_one(WorkloadPanel)
                if self.is_active:
                    workload.add_sample(event.t, event.values)
                    if event.at is not None:
                        self.query_one(TicketsPanel).tick(event.at)
                else:
                    workload.record(event.t, event.values)
                    self._covered_samples = True
                return
            self.query_one(Transcript).show(event)
            self._narrate(event)
            scored = self.scoreboard.apply(event)
            if scored is not None:
                self.query_one(ScoreboardPanel).show(scored)
            if isinstance(event, ev.TicketEvent):
                self._ticket(event)
            elif isinstance(event, ev.ActionEvent):
                self._action(event)

    def _narrate(self, event: Event) -> None:
        narration = self.query_one(NarrationPanel)
        workload = self.query_one(WorkloadPanel)
        match event:
            case ev.ClusterReady():
                workload.configure(SeriesSpec(**spec) for spec in event.series)
                if self.scenario is None:
                    narration.watching(event.about)
            case ev.ChapterEntered():
                narration.chapter(event.fields())
            case ev.FaultCountdown():
                narration.countdown(event.fields())
            case ev.FaultInjected():
                narration.fault(event.fields())
                workload.mark(event.t, f"fault {event.kind}", "error")
            case ev.FaultCleared():
                narration.fault_cleared(event.fields())
            case ev.TicketOpened():
                workload.mark(event.t, f"#{event.ticket_id}", "warning")
            case ev.RunFinished():
                narration.finished(event.fields())
                problems = event.summary.get("problems") or []
                if problems:
                    self.notify("\n".join(problems), title="Run FAILED", severity="error")
                else:
                    self.notify("the run finished and the cluster is healthy", title="Run OK")
            case ev.WaitTimedOut():
                self.notify(event.problem, severity="warning")
            case ev.WaitingForPerson():
                narration.waiting(
                    f"waiting {event.waited_s:.0f} s (of {event.limit_s:g}) for you to decide "
                    f"action {event.action_id} {event.action}: a approve · r reject"
                )
            case ev.WaitingForRecovery():
                narration.waiting(
                    f"waiting {event.waited_s:.0f} s (of {event.limit_s:g}) for recovery: "
                    f"{event.why}"
                )
            case ev.AgentReady() | ev.ModeChanged():
                self.mode = Mode(event.mode)
                self.sub_title = f"{self.title_text} · mode {self.mode.value}"
            case ev.DiagnosisReady():
                self.diagnoses[event.ticket_id] = event.fields()

    def _ticket(self, event: ev.TicketEvent) -> None:
        assert event.at is not None
        self.query_one(TicketsPanel).show(event.fields(), event.at)
        target = event.target
        if event.state == "resolved":
            self.open_tickets.pop(event.ticket_id, None)
        else:
            self.open_tickets[event.ticket_id] = (target, event.invariant)
        names = [
            f"#{tid} {invariant}"
            for tid, (named, invariant) in sorted(self.open_tickets.items())
            if named == target
        ]
        self.query_one(ClusterPanel).flag(target, ", ".join(names) or None)

    def _action(self, event: ev.ActionEvent) -> None:
        action_id = event.action_id
        if isinstance(event, ev.ActionProposed):
            self.pending[action_id] = event.fields()
            if event.decision == "await_approval":
                self._ask(action_id)
        elif event.state != "proposed":
            self.pending.pop(action_id, None)
            screen = self.app.screen
            if isinstance(screen, ApprovalModal) and screen.action.get("action_id") == action_id:
                screen.dismiss(None)  # decided elsewhere (CLI, policy, expiry, kill switch)

    # --- commands ----------------------------------------------------------------------

    def _ask(self, action_id: int) -> None:
        if action_id in self._asking:
            return
        self._asking.add(action_id)
        f = self.pending[action_id]
        diagnosis = self.diagnoses.get(int(f.get("ticket_id") or 0))

        def decided(approve: bool | None) -> None:
            self._asking.discard(action_id)
            if approve:
                self._approve(action_id)
            elif action_id in self.pending:
                self._ask_reason(action_id)

        self.app.push_screen(ApprovalModal(f, diagnosis), decided)

    def _ask_reason(self, action_id: int) -> None:
        label = f"action {action_id} ({self.pending.get(action_id, {}).get('action', '?')})"

        def reasoned(reason: str | None) -> None:
            if reason is not None:
                self._reject(action_id, reason)

        self.app.push_screen(ReasonModal(label), reasoned)

    @work(group="decisions", exit_on_error=False)
    async def _approve(self, action_id: int) -> None:
        try:
            await asyncio.to_thread(self.decisions.approve, action_id, by=PERSON)
        except ApprovalError as exc:
            self.notify(str(exc), title="Not approved", severity="warning")
        else:
            self.notify(f"action {action_id} approved")

    @work(group="decisions", exit_on_error=False)
    async def _reject(self, action_id: int, reason: str) -> None:
        try:
            await asyncio.to_thread(self.decisions.reject, action_id, by=PERSON, reason=reason)
        except ApprovalError as exc:
            self.notify(str(exc), title="Not rejected", severity="warning")
        else:
            self.notify(f"action {action_id} rejected")

    def _newest_pending(self) -> int | None:
        return max(self.pending) if self.pending else None

    def action_tickets(self) -> None:
        self.app.push_screen(
            TicketsScreen(
                self.engine,
                self.runtime.run_id,
                scoreboard=self.scoreboard,
                causes=self.runtime.causes,
            )
        )

    def action_audit(self) -> None:
        self.app.push_screen(AuditScreen(self.engine, self.runtime.run_id))

    def action_evals(self) -> None:
        self.app.push_screen(EvalsScreen(self.engine))

    def action_next_chapter(self) -> None:
        self.runner.advance()

    def action_approve(self) -> None:
        action_id = self._newest_pending()
        if action_id is None:
            self.notify("no action is waiting for approval")
        else:
            self._approve(action_id)

    def action_reject(self) -> None:
        action_id = self._newest_pending()
        if action_id is None:
            self.notify("no action is waiting for approval")
        else:
            self._ask_reason(action_id)

    @work(group="controls", exclusive=True, exit_on_error=False)
    async def action_cycle_mode(self) -> None:
        controls = self.runtime.controls
        current = self.mode or await asyncio.to_thread(controls.mode)
        new = MODE_CYCLE[(MODE_CYCLE.index(current) + 1) % len(MODE_CYCLE)]
        try:
            await asyncio.to_thread(controls.set_mode, new, by=PERSON)
        except ApprovalError as exc:
            self.notify(str(exc), title="Mode unchanged", severity="warning")
            return
        self.mode = new
        self.sub_title = f"{self.title_text} · mode {new.value}"
        self.notify(f"mode {new.value}")

    @work(group="controls", exclusive=True, exit_on_error=False)
    async def action_kill_switch(self) -> None:
        cancelled = await asyncio.to_thread(self.runtime.controls.set_kill_switch, True, by=PERSON)
        self.mode = Mode.OBSERVE
        self.notify(
            f"kill switch on: mode observe, {len(cancelled)} pending action(s) cancelled",
            title="Kill switch",
            severity="error",
        )
