"""The headless runner: the timeline as JSON lines on stdout, progress for people on stderr."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import signal
import sys
from typing import IO, Any

from operator_console.events import Event
from operator_console.runtime import Runtime
from operator_console.scenarios.runner import RunOutcome, ScenarioRunner

log = logging.getLogger(__name__)

# Per-tick internals the console renders; the timeline carries their consequences instead.
NOT_ON_TIMELINE = frozenset({"observation"})


class TimelineWriter:
    """Writes each event as one JSON object per line and flushes, so a pipe sees it at once."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def __call__(self, event: Event) -> None:
        if event.name in NOT_ON_TIMELINE:
            return
        self.out.write(json.dumps(event.to_dict(), default=str, separators=(",", ":")) + "\n")
        self.out.flush()


class ProgressWriter:
    """One short line per meaningful event for the person watching the terminal."""

    def __init__(self, err: IO[str]) -> None:
        self.err = err

    def _line(self, event: Event) -> str | None:
        f: dict[str, Any] = event.fields
        match event.name:
            case "run_started":
                return f"run {f['run_id']}: {f['scenario']} (logs in {f['run_dir']})"
            case "cluster_ready":
                nodes = f.get("endpoints", {}).get("nodes", {})
                return f"cluster ready: {len(nodes)} nodes"
            case "chapter_entered":
                return f"chapter {f['index']}/{f['total']}: {f['title']}"
            case "fault_countdown":
                return f"  injecting {f['kind']} in {f['seconds']:g}..."
            case "fault_injected":
                return f"  FAULT {f['description']}"
            case "fault_cleared":
                return f"  fault {f['kind']} on {f['target']} cleared by {f['by']}"
            case "ticket_opened":
                return f"  TICKET #{f['ticket_id']} {f['invariant']} {f['target']}: {f['message']}"
            case "ticket_resolved":
                by = f" by the agent (action {f['action_id']})" if f.get("by") == "agent" else ""
                return f"  resolved #{f['ticket_id']} {f['invariant']} {f['target']}{by}"
            case "ticket_escalated":
                return f"  escalated #{f['ticket_id']}: {f.get('reason')}"
            case "agent_ready":
                return f"agent: {f['why']}, mode {f['mode']}"
            case "agent_started":
                return f"  agent ({f['brain']}) investigates #{f['ticket_id']}"
            case "agent_step" if f.get("kind") == "tool_call":
                return f"    tool {f.get('tool')} {json.dumps(f.get('input') or {})}"
            case "diagnosis_ready":
                recs = ", ".join(r["action"] for r in f.get("recommended", [])) or "no action"
                return (
                    f"  diagnosis #{f['ticket_id']}: {f['root_cause']} "
                    f"(confidence {f['confidence']}); recommends {recs}"
                )
            case "action_proposed":
                return (
                    f"  proposed action {f['action_id']}: {f['action']} {json.dumps(f['params'])} "
                    f"(risk {f['risk']})"
                )
            case "approval_needed":
                return (
                    f"  WAITING for a person ({f['risk']} risk, mode {f['mode']}): "
                    f"operator-console actions approve {f['action_id']}   "
                    f"(or: actions reject {f['action_id']} --reason TEXT)"
                )
            case "action_approved" | "action_rejected" | "action_expired" | "action_cancelled":
                verb = event.name.removeprefix("action_")
                return f"  action {f['action_id']} {verb} by {f.get('by')}"
            case "action_executing":
                return f"  executing {f['action']} {json.dumps(f['params'])}"
            case "action_succeeded" | "action_failed":
                detail = f.get("result") or f.get("error") or ""
                return f"  {f['action']} {event.name.removeprefix('action_')}: {detail}"
            case "action_verified" | "action_not_verified":
                return f"  {f['action']} {event.name.removeprefix('action_')}: {f.get('detail')}"
            case "action_invalid":
                return f"  refused proposal {f['action']}: {f['error']}"
            case "mode_changed":
                return f"mode {f['mode']} (was {f['previous']})"
            case "kill_switch":
                return f"KILL SWITCH {'ON' if f['on'] else 'off'}"
            case "wait_timed_out":
                return f"  {f['problem']}"
            case "run_finished":
                summary = f.get("summary", {})
                verdict = "OK" if f.get("ok") else "FAILED"
                text = f"run finished: {verdict} in {summary.get('duration_s', 0):.1f} s"
                for problem in summary.get("problems", []):
                    text += f"\n  - {problem}"
                return text
        return None

    def __call__(self, event: Event) -> None:
        line = self._line(event)
        if line:
            self.err.write(f"[{event.t:7.2f}] {line}\n")
            self.err.flush()


class Interrupted(Exception):
    """The run was stopped by a signal (Ctrl+C, SIGTERM, a closed terminal) and cleaned up."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


async def run_headless(
    runtime: Runtime, *, pace: float = 1.0, quiet: bool = False, out: IO[str] | None = None
) -> RunOutcome:
    """Run a scenario to the end. SIGINT, SIGTERM and SIGHUP stop it cleanly (every child
    stopped) and raise Interrupted."""
    runtime.bus.add_listener(TimelineWriter(out or sys.stdout))
    if not quiet:
        runtime.bus.add_listener(ProgressWriter(sys.stderr))
    runner = ScenarioRunner(runtime, pace=pace, auto_advance=True)
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
