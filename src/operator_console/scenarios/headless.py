"""The headless runner: the timeline as JSON lines on stdout, progress for people on stderr."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import signal
import sys
from typing import IO, Protocol

from operator_console.domain import events as ev
from operator_console.domain.events import Event
from operator_console.runtime import Runtime
from operator_console.scenarios.model import Scenario
from operator_console.scenarios.runner import RunOutcome, ScenarioRunner

log = logging.getLogger(__name__)


class TimelineWriter:
    """Writes each timeline event as one JSON object per line and flushes, so a pipe sees it."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def __call__(self, event: Event) -> None:
        if not event.on_timeline:
            return
        self.out.write(json.dumps(event.to_dict(), default=str, separators=(",", ":")) + "\n")
        self.out.flush()


def progress_line(event: Event) -> str | None:
    """One short line for the person watching the terminal, or None for events not worth one."""
    match event:
        case ev.RunStarted():
            return f"run {event.run_id}: {event.scenario} (logs in {event.run_dir})"
        case ev.ClusterReady():
            return f"cluster ready: {event.about}" if event.about else "cluster ready"
        case ev.ChapterEntered():
            return f"chapter {event.index}/{event.total}: {event.title}"
        case ev.FaultCountdown():
            return f"  injecting {event.kind} in {event.seconds:g}..."
        case ev.FaultInjected():
            return f"  FAULT {event.description}"
        case ev.FaultCleared():
            return f"  fault {event.kind} on {event.target} cleared by {event.by}"
        case ev.TicketOpened():
            return f"  TICKET #{event.ticket_id} {event.invariant} {event.target}: {event.message}"
        case ev.TicketResolved():
            by = f" by the agent (action {event.action_id})" if event.by == "agent" else ""
            return f"  resolved #{event.ticket_id} {event.invariant} {event.target}{by}"
        case ev.TicketEscalated():
            return f"  escalated #{event.ticket_id}: {event.reason}"
        case ev.AgentReady():
            return f"agent: {event.why}, mode {event.mode}"
        case ev.AgentStarted():
            return f"  agent ({event.brain}) investigates #{event.ticket_id}"
        case ev.AgentStep() if event.kind == "tool_call":
            return f"    tool {event.tool} {json.dumps(event.input or {})}"
        case ev.DiagnosisReady():
            recs = ", ".join(r["action"] for r in event.recommended) or "no action"
            return (
                f"  diagnosis #{event.ticket_id}: {event.root_cause} "
                f"(confidence {event.confidence:.0%}); recommends {recs}"
            )
        case ev.ActionProposed():
            line = (
                f"  proposed action {event.action_id}: {event.action} "
                f"{json.dumps(event.params)} (risk {event.risk})"
            )
            if event.decision == "await_approval":
                line += (
                    f"\n  WAITING for a person ({event.why}): operator-console actions approve "
                    f"{event.action_id}   (or: actions reject {event.action_id} --reason TEXT)"
                )
            return line
        case ev.ActionApproved() | ev.ActionRejected() | ev.ActionExpired() | ev.ActionCancelled():
            verb = event.name.removeprefix("action_")
            why = f" ({event.reason})" if event.reason else ""
            return f"  action {event.action_id} {verb} by {event.by}{why}"
        case ev.ActionExecuting():
            return f"  executing {event.action} {json.dumps(event.params)}"
        case ev.ActionSucceeded():
            return f"  {event.action} succeeded: {event.result or ''}"
        case ev.ActionFailed():
            return f"  {event.action} failed: {event.error}"
        case ev.ActionVerified() | ev.ActionNotVerified():
            return f"  {event.action} {event.name.removeprefix('action_')}: {event.detail}"
        case ev.ActionInvalid():
            return f"  refused proposal {event.action}: {event.error}"
        case ev.ModeChanged():
            return f"mode {event.mode} (was {event.previous})"
        case ev.KillSwitch():
            return f"KILL SWITCH {'ON' if event.on else 'off'}"
        case ev.WaitingForPerson():
            return (
                f"  WAITING {event.waited_s:.0f} s (of {event.limit_s:g}) for a person to decide "
                f"action {event.action_id} {event.action} {json.dumps(event.params)}: "
                f"{event.command}   (or: actions reject {event.action_id} --reason TEXT)"
            )
        case ev.WaitingForRecovery():
            return f"  waiting {event.waited_s:.0f} s (of {event.limit_s:g}): {event.why}"
        case ev.TicketMitigated():
            return f"  MITIGATED #{event.ticket_id}: {event.remains}"
        case ev.CauseCleared():
            return f"  cause cleared on #{event.ticket_id}: {event.detail}"
        case ev.TicketAbandoned():
            return f"  abandoned #{event.ticket_id}: {event.reason}"
        case ev.WaitTimedOut():
            return f"  {event.problem}"
        case ev.RunFinished():
            verdict = "OK" if event.ok else "FAILED"
            text = f"run finished: {verdict} in {event.summary.get('duration_s', 0):.1f} s"
            for problem in event.summary.get("problems", []):
                text += f"\n  - {problem}"
            return text
    return None


class ProgressWriter:
    """One short line per meaningful event for the person watching the terminal."""

    def __init__(self, err: IO[str]) -> None:
        self.err = err

    def __call__(self, event: Event) -> None:
        line = progress_line(event)
        if line:
            self.err.write(f"[{event.t:7.2f}] {line}\n")
            self.err.flush()


class Interrupted(Exception):
    """The run was stopped by a signal (Ctrl+C, SIGTERM, a closed terminal) and cleaned up."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Runner(Protocol):
    async def run(self) -> RunOutcome: ...


def scenario_runner(runtime: Runtime, scenario: Scenario, *, pace: float = 1.0) -> ScenarioRunner:
    """A scenario that advances by itself, as a headless run does."""
    return ScenarioRunner(runtime, scenario, pace=pace, auto_advance=True)


async def run_headless(
    runtime: Runtime,
    runner: Runner,
    *,
    quiet: bool = False,
    out: IO[str] | None = None,
) -> RunOutcome:
    """Run to the end with the timeline on `out`. SIGINT, SIGTERM and SIGHUP stop it cleanly
    (every child stopped) and raise Interrupted."""
    runtime.bus.add_listener(TimelineWriter(out or sys.stdout))
    if not quiet:
        runtime.bus.add_listener(ProgressWriter(sys.stderr))
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    received: list[int] = []

    def stop(signum: int) -> None:
        if not received:  # a second signal does not cut the cleanup short
            task.cancel()
        received.append(signum)

    # Handled here rather than left to asyncio.run's own Ctrl+C handling, which it installs
    # only when SIGINT still has Python's default handler (not when the parent ignored it).
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        try:
            loop.add_signal_handler(sig, stop, sig)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):
            pass
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGUSR2, _log_tasks)
        installed.append(signal.SIGUSR2)
    try:
        return await runner.run()
    except asyncio.CancelledError:
        if received:
            raise Interrupted(received[0]) from None
        raise
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def _log_tasks() -> None:
    """`kill -USR2 PID`: log where every asyncio task of the run is waiting."""
    for task in asyncio.all_tasks():
        buffer = io.StringIO()
        task.print_stack(limit=12, file=buffer)
        log.warning("task %s\n%s", task.get_name(), buffer.getvalue())
