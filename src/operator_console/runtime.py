"""Wires one run together: the subject's lab and workload, the monitor, the agent, the executor,
the bus and the database. The console and the headless runner are two views of it."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import psutil
from sqlalchemy.engine import Engine

from operator_console.actions.chain import chain_action
from operator_console.actions.decisions import Decisions
from operator_console.actions.executor import Executor, Verifier
from operator_console.actions.shell import shell_action, shell_sandbox
from operator_console.actions.store import ActionRepository, Controls, Mode
from operator_console.agent.proposals import Limits
from operator_console.agent.runner import AgentLoop
from operator_console.agent.select import choose_brain
from operator_console.agent.summaries import (
    AuditSummarizer,
    summarize_while_running,
    summarizer_for,
)
from operator_console.audit import AuditLog, redact
from operator_console.contract import (
    AgentKit,
    Condition,
    Deployment,
    Fault,
    Placement,
    SeriesSpec,
    get_subject_kind,
)
from operator_console.db import RunRepository, TicketRepository, TranscriptRepository, init_db
from operator_console.domain import Observation, WorkloadSample
from operator_console.domain.bus import EventBus
from operator_console.domain.events import (
    ActionInterrupted,
    AgentReady,
    ClusterReady,
    FaultCleared,
    FaultClearFailed,
    FaultInjected,
    ModeChanged,
    RunFinished,
    RunStarted,
    TicketAbandoned,
    WorkloadChanged,
    WorkloadSampled,
)
from operator_console.monitor import Monitor
from operator_console.monitor.health import wait_healthy
from operator_console.settings import Settings

if TYPE_CHECKING:
    from operator_console.lab.sandbox import ShellSandbox

log = logging.getLogger(__name__)

STOP_STEP_S = 10.0
# The workload may stop its traffic and read every write back before it can say what it saw.
GROUND_TRUTH_S = 40.0
HEALTHY_TIMEOUT_S = 180.0


def new_run_id() -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True, slots=True)
class RunPlan:
    """What a run runs: a scenario's subject, topology and workload, or an attached cluster."""

    name: str
    subject: str
    topology: Mapping[str, Any] = field(default_factory=dict)
    workload: Mapping[str, Any] | None = None
    chapters: int = 0
    placement: Placement = "local"
    endpoints: Mapping[str, Any] = field(default_factory=dict)
    # A compose stack's folder: brought up and down around a `compose` run; the containers
    # of a watched (attach) one.
    compose: str | None = None


@dataclass(slots=True)
class ActiveFault:
    kind: str
    target: str | None
    params: dict[str, Any]
    fault: Fault
    injected_at: float


class LoopHandle(Protocol):
    """A running loop the runtime can stop: an asyncio task's wrapper or a Textual worker."""

    def cancel(self) -> object: ...

    async def wait(self) -> object: ...


Spawn = Callable[[str, Coroutine[Any, Any, None]], LoopHandle]


class _TaskLoop:
    def __init__(self, task: asyncio.Task[None]) -> None:
        self.task = task

    def cancel(self) -> None:
        self.task.cancel()

    async def wait(self) -> None:
        try:
            await self.task
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("the %s loop failed", self.task.get_name())


def spawn_task(name: str, loop: Coroutine[Any, Any, None]) -> LoopHandle:
    """Run a loop as a plain asyncio task (the headless runner's way)."""
    return _TaskLoop(asyncio.create_task(loop, name=name))


@dataclass(frozen=True, slots=True)
class RunOptions:
    """How a run is driven: with or without the agent, which brain, which mode."""

    agent: bool = True
    brain: str | None = None
    mode: Mode | None = None


class Runtime:
    """One run of a subject; the TUI and the headless runner are two views of it."""

    def __init__(
        self,
        plan: RunPlan,
        settings: Settings,
        engine: Engine,
        *,
        bus: EventBus | None = None,
        run_id: str | None = None,
        agent: bool = True,
        brain: str | None = None,
        mode: Mode | None = None,
    ) -> None:
        self.plan = plan
        self.settings = settings
        self.engine = engine
        self.bus = bus or EventBus()
        self.run_id = run_id or new_run_id()
        self.run_dir: Path = settings.runs_dir / self.run_id
        self.kind = get_subject_kind(plan.subject)
        self.runs = RunRepository(engine)
        self.tickets = TicketRepository(engine)
        self.deployment: Deployment | None = None
        self.monitor: Monitor | None = None
        self.faults: list[ActiveFault] = []
        self.last_sample: WorkloadSample | None = None
        self.agent_enabled = agent
        self.brain_choice = brain
        self.requested_mode = mode
        self.controls = Controls(engine, default_mode=Mode(settings.mode))
        self.actions = ActionRepository(engine)
        self.audit = AuditLog(engine)
        self.decisions = Decisions(self.actions, self.controls, self.bus, windows=settings.windows)
        self.agent: AgentLoop | None = None
        self.executor: Executor | None = None
        self.summarizer: AuditSummarizer | None = None
        self.brain_why = ""
        # Per invariant, the invariants it is a consequence of: an incident's cause comes first.
        self.causes: dict[str, tuple[str, ...]] = {}
        self._loops: list[LoopHandle] = []
        self.spawn: Spawn = spawn_task
        self._started = False

    @property
    def last_observation(self) -> Observation | None:
        return self.monitor.last_observation if self.monitor else None

    @property
    def system(self) -> str:
        """What the targets belong to: this run's own lab, or the attached cluster (so two
        consoles watching one cluster share its blast radius)."""
        if self.plan.placement == "attach":
            canonical = json.dumps(redact(dict(self.plan.endpoints)), sort_keys=True, default=str)
            return f"{self.plan.subject}:{hashlib.sha256(canonical.encode()).hexdigest()[:16]}"
        return f"run:{self.run_id}"

    @property
    def series(self) -> list[SeriesSpec]:
        """The workload panel's lines (none before the deployment exists)."""
        workload = self.deployment.workload if self.deployment else None
        return list(workload.series) if workload is not None else []

    def _on_sample(self, sample: WorkloadSample) -> None:
        self.last_sample = sample
        self.bus.publish(
            WorkloadSampled(
                values=dict(sample.values),
                per_target={k: dict(v) for k, v in sample.per_target.items()},
            )
        )

    def _deploy(self) -> Deployment:
        plan = self.plan
        if plan.compose is not None:
            return self._deploy_stack(plan.compose)
        if plan.placement == "attach":
            return self.kind.attach(plan.endpoints, self.run_dir, self._on_sample)
        return self.kind.deploy(plan.topology, plan.workload or {}, self.run_dir, self._on_sample)

    def _deploy_stack(self, directory: str) -> Deployment:
        """The subject attached to a compose stack's endpoints, acting on its containers."""
        from operator_console.lab.compose import ComposeStack, StackLab
        from operator_console.lab.containers import DockerEngine

        plan = self.plan
        stack = ComposeStack(Path(directory), DockerEngine())
        owns = plan.placement == "compose"
        deployment = self.kind.attach(
            dict(plan.endpoints) or stack.endpoints(),
            self.run_dir,
            self._on_sample,
            processes=stack.backend(),
            workload=(plan.workload or None) if owns else None,
        )
        deployment.lab = StackLab(stack, deployment.lab, owns=owns)
        deployment.placement = plan.placement
        return deployment

    async def wait_healthy(self, timeout_s: float = HEALTHY_TIMEOUT_S) -> float:
        """Observe until every source answers and no invariant is violated (a stack that was
        just brought up); seconds it took, or RuntimeError saying what is still wrong."""
        assert self.deployment is not None, "start() first"
        return await wait_healthy(
            self.deployment.subject,
            timeout_s=timeout_s,
            read_timeout_s=max(10.0, 2 * self.settings.interval),
        )

    async def start(self) -> None:
        """Start the lab and the workload; the loops are started separately."""
        self.bus.bind_loop()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(init_db, self.engine)
        await self.reap_dead_runs()
        await asyncio.to_thread(
            self.runs.create,
            self.run_id,
            self.plan.name,
            self.plan.subject,
            str(self.run_dir),
        )
        self.bus.publish(
            RunStarted(
                run_id=self.run_id,
                scenario=self.plan.name,
                subject=self.plan.subject,
                run_dir=str(self.run_dir),
                chapters=self.plan.chapters,
                placement=self.plan.placement,
            )
        )
        self._started = True
        self.deployment = self._deploy()
        self.causes = {
            inv.name: tuple(inv.consequence_of) for inv in self.deployment.subject.invariants
        }
        await self.deployment.lab.start()
        if self.plan.placement == "compose":
            took = await self.wait_healthy()
            log.info("the stack was healthy %.1f s after it came up", took)
        if self.deployment.workload is not None:
            await self.deployment.workload.start()
        self.bus.publish(
            ClusterReady(
                endpoints=self.deployment.lab.endpoints(),
                about=self.deployment.lab.about(),
                series=[spec.to_dict() for spec in self.series],
            )
        )
        self.monitor = Monitor(
            self.deployment.subject,
            self.tickets,
            self.bus,
            run_id=self.run_id,
            interval=self.settings.interval,
            resolve_after=self.settings.resolve_after,
            escalate_after_s=self.settings.escalate_after_s,
        )
        if self.agent_enabled and self.deployment.agent is not None:
            await self._prepare_agent(self.deployment.agent)

    async def _prepare_agent(self, kit: AgentKit) -> None:
        live = await asyncio.to_thread(self.runs.live, psutil.pid_exists)
        interrupted = await asyncio.to_thread(self.actions.mark_interrupted, live)
        for row in interrupted:
            assert row.id is not None
            self.bus.publish(ActionInterrupted(action_id=row.id, action=row.name))
        if self.requested_mode is not None:
            # `--mode` holds for this run only; the persisted mode stays as it was.
            previous = await asyncio.to_thread(self.controls.mode)
            if await asyncio.to_thread(self.controls.kill_switch):
                log.warning("--mode %s ignored: the kill switch is on", self.requested_mode)
            else:
                self.controls.run_mode = self.requested_mode
                if previous is not self.requested_mode:
                    self.bus.publish(
                        ModeChanged(mode=self.requested_mode.value, previous=previous.value)
                    )
        # Every subject's catalog offers the generic chain of its own actions.
        catalog = kit.actions.with_action(chain_action())
        if self.settings.shell_enabled:
            catalog = catalog.with_action(
                shell_action(
                    self.run_dir,
                    timeout_s=self.settings.shell_timeout_s,
                    output_cap=self.settings.shell_output_cap,
                    sandbox=await self._shell_sandbox(),
                )
            )
        choice = choose_brain(self.settings, kit, self.brain_choice)
        self.brain_why = choice.why
        if choice.brain.name == "claude":
            self.summarizer = summarizer_for(self.settings, self.audit, self.run_id)
        self.agent = AgentLoop(
            choice.brain,
            kit,
            tickets=self.tickets,
            transcript=TranscriptRepository(self.engine),
            actions=self.actions,
            controls=self.controls,
            decisions=self.decisions,
            bus=self.bus,
            run_id=self.run_id,
            audit=self.audit,
            catalog=catalog,
            causes=self.causes,
            system=self.system,
            limits=Limits(
                auto_per_target=self.settings.auto_actions_per_target,
                window_s=self.settings.auto_action_window_s,
                after_action_s=self.settings.after_action_window_s,
            ),
        )
        self.executor = Executor(
            self.actions,
            self.controls,
            self.tickets,
            catalog,
            self.bus,
            Verifier(self.bus, clean_ticks=self.settings.resolve_after),
            run_id=self.run_id,
            condition=self._condition,
        )
        mode = await asyncio.to_thread(self.controls.mode)
        kill = await asyncio.to_thread(self.controls.kill_switch)
        self.bus.publish(
            AgentReady(brain=choice.brain.name, why=choice.why, mode=mode.value, kill_switch=kill)
        )

    async def _shell_sandbox(self) -> ShellSandbox | None:
        """A container per shell command when a Docker engine answers (None: run as before)."""
        if self.settings.shell_sandbox == "off":
            return None
        from operator_console.lab.compose import StackLab

        lab = self.deployment.lab if self.deployment is not None else None
        network = lab.stack.network() if isinstance(lab, StackLab) else None
        return await shell_sandbox(self.run_dir, network)

    def _condition(self, name: str, target: str) -> Condition | None:
        """Whether a mitigated cause still holds on a target, by the last observation."""
        observation = self.last_observation
        if observation is None or self.deployment is None:
            return None
        return self.deployment.subject.condition(name, target, observation)

    def start_loops(self) -> list[LoopHandle]:
        """Run the monitor, agent and executor loops through `spawn`: asyncio tasks by
        default; the console spawns them as Textual workers, one group each."""
        assert self.monitor is not None, "start() first"
        loops: list[tuple[str, Coroutine[Any, Any, None]]] = [("monitor", self.monitor.run())]
        if self.agent is not None:
            loops.append(("agent", self.agent.run()))
        if self.executor is not None:
            loops.append(("executor", self.executor.run()))
        if self.summarizer is not None:
            loops.append(("summaries", summarize_while_running(self.summarizer, self.bus)))
        for name, loop in loops:
            self._loops.append(self.spawn(name, loop))
        return list(self._loops)

    def fault_kinds(self) -> list[str]:
        return list(self.deployment.lab.fault_kinds()) if self.deployment else []

    async def inject(self, kind: str, target: str | None, params: Mapping[str, Any]) -> ActiveFault:
        assert self.deployment is not None, "start() first"
        fault = self.deployment.lab.make_fault(kind, target, params)
        await fault.inject()
        active = ActiveFault(kind, target, dict(params), fault, self.bus.elapsed())
        self.faults.append(active)
        self.bus.publish(
            FaultInjected(
                kind=fault.kind,
                target=fault.target,
                params=dict(params),
                description=fault.describe(),
            )
        )
        return active

    async def clear_faults(self, *, by: str) -> None:
        while self.faults:
            active = self.faults.pop()
            try:
                await active.fault.clear()
            except Exception as exc:
                log.exception("clearing %s failed", active.fault.kind)
                self.bus.publish(
                    FaultClearFailed(
                        kind=active.fault.kind, target=active.fault.target, error=str(exc)
                    )
                )
                continue
            self.bus.publish(
                FaultCleared(kind=active.fault.kind, target=active.fault.target, by=by)
            )

    def adjust_workload(self, changes: dict[str, Any]) -> None:
        if self.deployment is not None and self.deployment.workload is not None:
            self.deployment.workload.adjust(changes)
            self.bus.publish(WorkloadChanged(changes=dict(changes)))

    async def reap_dead_runs(self) -> None:
        """Tickets of runs whose console died are abandoned, saying so."""
        for run, tickets in await asyncio.to_thread(self.runs.reap_dead, psutil.pid_exists):
            for ticket in tickets:
                self.bus.publish(
                    TicketAbandoned(**ticket.event_fields(), reason=ticket.closed_reason or "")
                )
            log.info("run %s: its console is gone; %d ticket(s) abandoned", run.id, len(tickets))

    async def abandon_open(self, reason: str) -> list[str]:
        """The run ends: every ticket still open ends abandoned, with the reason."""
        tickets = await asyncio.to_thread(self.tickets.abandon_run, self.run_id, reason)
        for ticket in tickets:
            self.bus.publish(TicketAbandoned(**ticket.event_fields(), reason=reason))
        return [f"#{t.id} {t.invariant} on {t.target}" for t in tickets]

    async def ground_truth(self) -> dict[str, Any] | None:
        """The workload's own record of the run (bounded); a record it could not read says so."""
        workload = self.deployment.workload if self.deployment is not None else None
        if workload is None:
            return None
        try:
            async with asyncio.timeout(GROUND_TRUTH_S):
                truth = await workload.ground_truth()
        except TimeoutError:
            return {"error": f"the workload's record did not come within {GROUND_TRUTH_S:g} s"}
        except Exception as exc:
            log.exception("reading the workload's record failed")
            return {"error": f"{type(exc).__name__}: {exc}"[:300]}
        return dict(truth) if truth is not None else None

    async def finish(
        self, *, ok: bool, summary: dict[str, Any], reason: str = ""
    ) -> dict[str, Any]:
        """Record the outcome; tickets still open are abandoned first, and the summary says so
        (with the workload's own record); returns the summary as recorded."""
        await self.stop_loops()  # nothing may reopen or touch a ticket after this
        if self.summarizer is not None:  # the last steps' lines, within the budget
            await _bounded(self.summarizer.flush(), STOP_STEP_S, "audit summaries")
        abandoned = await self.abandon_open(
            f"the run ended ({reason or ('ok' if ok else 'failed')}) before it was resolved"
        )
        if abandoned:
            summary = {**summary, "abandoned": abandoned}
        truth = await self.ground_truth()
        if truth is not None:
            summary = {**summary, "ground_truth": truth}
        await asyncio.to_thread(self.runs.finish, self.run_id, ok=ok, summary=summary)
        self.bus.publish(RunFinished(ok=ok, summary=summary))
        return summary

    async def stop_loops(self) -> None:
        """Cancel the monitor, agent and executor loops and wait (bounded) until they end."""
        loops, self._loops = self._loops, []
        for handle in loops:
            handle.cancel()
        if loops:
            waits = [asyncio.ensure_future(handle.wait()) for handle in loops]
            done, stuck = await asyncio.wait(waits, timeout=STOP_STEP_S)
            for waited in done:
                if not waited.cancelled():
                    waited.exception()  # a cancelled worker says so by raising: expected here
            for waiting in stuck:
                waiting.cancel()
            if stuck:
                log.warning("%d loop(s) did not stop within %.0f s", len(stuck), STOP_STEP_S)

    async def stop(self) -> None:
        """Stop everything this run started; safe to call more than once, even mid-start."""
        await self.stop_loops()
        if self._started:
            await _bounded(self.abandon_open("the run stopped"), STOP_STEP_S, "tickets")
        if self.executor is not None:
            await _bounded(self.executor.stop(), STOP_STEP_S, "executor")
        if self.agent is not None:
            await _bounded(self.agent.close(), STOP_STEP_S, "agent")
        if self.summarizer is not None:
            await _bounded(self.summarizer.aclose(), STOP_STEP_S, "audit summaries")
        deployment, self.deployment = self.deployment, None
        if deployment is None:
            return
        if deployment.workload is not None:
            await _bounded(deployment.workload.stop(), STOP_STEP_S, "workload")
        await _bounded(deployment.subject.close(), STOP_STEP_S, "observer")
        # Last and unbounded: every process the lab started must be gone when this returns.
        await deployment.lab.stop()


async def _bounded(step: Awaitable[object], seconds: float, what: str) -> None:
    """A stuck part of shutdown is logged and skipped, so the lab is always stopped."""
    try:
        async with asyncio.timeout(seconds):
            await step
    except TimeoutError:
        log.warning("stopping the %s took over %.0f s; went on without it", what, seconds)
    except Exception:
        log.exception("stopping the %s failed", what)
