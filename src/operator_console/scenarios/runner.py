"""The chapter runner: walks a scenario's chapters over a runtime and judges its expectations."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from operator_console.actions.store import Mode
from operator_console.db.models import ActionRow
from operator_console.domain.events import (
    ActionEvent,
    ActionFailed,
    ActionNotVerified,
    ActionVerified,
    ChapterEntered,
    Event,
    FaultCountdown,
    FaultInjected,
    Observed,
    TicketOpened,
    TicketResolved,
    WaitingForPerson,
    WaitingForRecovery,
    WaitTimedOut,
    WorkloadSampled,
    doing,
)
from operator_console.runtime import Runtime
from operator_console.scenarios.model import Chapter, Scenario, WaitFor
from operator_console.scenarios.scoreboard import SUMMARY_KEY, Scoreboard

log = logging.getLogger(__name__)

COUNTDOWN_STEP_S = 1.0
NOTICE_EVERY_S = 5.0


@dataclass(slots=True)
class RunOutcome:
    ok: bool
    summary: dict[str, Any] = field(default_factory=dict)


class ScenarioRunner:
    """Plays chapters in order. Headless it advances by itself; the console calls `advance()`."""

    def __init__(
        self,
        runtime: Runtime,
        scenario: Scenario,
        *,
        pace: float = 1.0,
        auto_advance: bool = True,
    ) -> None:
        self.runtime = runtime
        self.scenario = scenario
        self.bus = runtime.bus
        self.pace = pace
        self.auto_advance = auto_advance
        self.chapter_index = -1
        self.events: list[Event] = []
        self.problems: list[str] = []
        self._changed = asyncio.Event()
        self._advance = asyncio.Event()
        self._remove_listener: Callable[[], None] | None = None
        self._last_observation: Observed | None = None

    def advance(self) -> None:
        """Move on to the next chapter (the console's space key)."""
        self._advance.set()

    def _record(self, event: Event) -> None:
        if isinstance(event, Observed):
            self._last_observation = event
        elif not isinstance(event, WorkloadSampled):
            self.events.append(event)
        self._changed.set()

    async def run(self) -> RunOutcome:
        self._remove_listener = self.bus.add_listener(self._record)
        runtime = self.runtime
        outcome = RunOutcome(ok=False)
        try:
            await runtime.start()
            runtime.start_loops()
            for index, chapter in enumerate(self.scenario.chapters):
                await self._play(index, chapter)
            await self._end_faults()
            outcome = await self._judge()
        except asyncio.CancelledError:
            self.problems.append("run interrupted")
            outcome = RunOutcome(ok=False, summary=self._summary(recovered=None))
            with contextlib.suppress(Exception):
                await asyncio.shield(
                    runtime.finish(ok=False, summary=outcome.summary, reason="interrupted")
                )
            raise
        except Exception as exc:
            log.exception("run failed")
            self.problems.append(f"{type(exc).__name__}: {exc}")
            outcome = RunOutcome(ok=False, summary=self._summary(recovered=None))
            outcome.summary = await runtime.finish(
                ok=False, summary=outcome.summary, reason=f"failed: {exc}"
            )
        else:
            outcome.summary = await runtime.finish(ok=outcome.ok, summary=outcome.summary)
        finally:
            await asyncio.shield(runtime.stop())
            if self._remove_listener is not None:
                self._remove_listener()
        return outcome

    async def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            await asyncio.sleep(seconds * self.pace)

    async def _play(self, index: int, chapter: Chapter) -> None:
        self.chapter_index = index
        self._advance.clear()
        entered = time.monotonic()
        self.bus.publish(
            ChapterEntered(
                index=index + 1,
                total=len(self.scenario.chapters),
                title=chapter.title,
                narration=chapter.narration.strip(),
                fault=chapter.fault.kind if chapter.fault else None,
            )
        )
        if chapter.workload:
            self.runtime.adjust_workload(chapter.workload)
        if chapter.fault is not None:
            seconds = chapter.fault.countdown
            while seconds > 0:
                self.bus.publish(
                    FaultCountdown(
                        kind=chapter.fault.kind,
                        target=chapter.fault.target,
                        seconds=round(seconds, 1),
                    )
                )
                step = min(COUNTDOWN_STEP_S, seconds)
                await self._sleep(step)
                seconds -= step
            fault = chapter.fault
            await self.runtime.inject(fault.kind, fault.target, fault.params)
        if chapter.repair:
            await self.runtime.clear_faults(by="scenario")
        wait = chapter.wait_for
        if wait is not None and not (wait.needs_agent and not self.operator_acts):
            if not await self._wait(wait):
                problem = (
                    f"chapter {index + 1} waited {wait.timeout:g} s for "
                    f"{self._describe(wait)} and it did not happen"
                )
                self.problems.append(problem)
                self.bus.publish(WaitTimedOut(chapter=index + 1, problem=problem))
        if self.auto_advance:
            remaining = chapter.duration * self.pace - (time.monotonic() - entered)
            if remaining > 0:
                await asyncio.sleep(remaining)
        else:
            await self._advance.wait()

    @staticmethod
    def _describe(wait: WaitFor) -> str:
        parts: list[str] = [wait.event]
        if wait.invariant:
            parts.append(wait.invariant)
        if wait.target:
            parts.append(f"on {wait.target}")
        return " ".join(parts)

    def _matches(self, event: Event, wait: WaitFor, since: float) -> bool:
        if event.t < since or event.name != wait.event:
            return False
        if wait.invariant and getattr(event, "invariant", None) != wait.invariant:
            return False
        return not (wait.target and getattr(event, "target", None) != wait.target)

    async def _wait(self, wait: WaitFor, *, since: float | None = None) -> bool:
        """Wait for the event to have happened since the last fault (or since now when there
        was none): what a chapter waits for may already have happened in the one before."""
        faults = [e.t for e in self.events if isinstance(e, FaultInjected)]
        start = since if since is not None else (faults[-1] if faults else self.bus.elapsed())
        deadline = time.monotonic() + wait.timeout
        while True:
            if wait.event == "healthy":
                if await self._healthy():
                    return True
            elif any(self._matches(e, wait, start) for e in self.events):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._changed.wait()

    async def _healthy(self) -> bool:
        """No unresolved ticket and the last observation clean in every source.
        (A mitigated ticket is unresolved: its cause is still there.)"""
        last = self._last_observation
        if last is None:
            return False
        sources_ok = all(s.get("state") == "ok" for s in last.sources.values())
        if not sources_ok or last.violations:
            return False
        unresolved = await asyncio.to_thread(self.runtime.tickets.unresolved, self.runtime.run_id)
        return not unresolved

    @property
    def operator_acts(self) -> bool:
        """An agent that may act (not in observe mode) is expected to fix what broke."""
        if self.runtime.agent is None:
            return False
        return self.runtime.controls.mode() is not Mode.OBSERVE

    async def _end_faults(self) -> None:
        """Without an operator the scenario cleans up after itself, and says so."""
        if self.runtime.faults and not self.operator_acts:
            await self.runtime.clear_faults(by="scenario")

    def _waiting_for_person(self) -> list[ActionRow]:
        rows = self.runtime.actions.find(run_id=self.runtime.run_id, states=["proposed"])
        return [r for r in rows if r.decision == "await_approval"]

    async def _await_recovery(self, timeout: float) -> tuple[bool, str]:
        """Wait until healthy. While a proposal waits for a person, say so every few seconds
        (with the command that approves it) and wait up to the approval limit; otherwise wait
        `timeout`, saying what is still open. Returns (recovered, what it waited for)."""
        limit = self.runtime.settings.approval_wait_s
        started = time.monotonic()
        waiting_since: dict[int, float] = {}
        next_notice, told = started, ""
        while True:
            if await self._healthy():
                return True, ""
            now = time.monotonic()
            pending = await asyncio.to_thread(self._waiting_for_person)
            if pending:
                for row in pending:
                    waiting_since.setdefault(row.id or 0, now)
                oldest = min(waiting_since[row.id or 0] for row in pending)
                if now - oldest >= limit:
                    names = ", ".join(f"#{r.id} {r.name} {r.params}" for r in pending)
                    return False, (
                        f"waited {limit:g} s for a person to decide action {names}; nobody did"
                    )
                if now >= next_notice:
                    next_notice = now + NOTICE_EVERY_S
                    for row in pending:
                        self.bus.publish(
                            WaitingForPerson(
                                action_id=row.id or 0,
                                ticket_id=row.ticket_id,
                                action=row.name,
                                params=dict(row.params),
                                why=row.policy_reason,
                                waited_s=round(now - waiting_since[row.id or 0], 1),
                                limit_s=limit,
                                command=f"operator-console actions approve {row.id}",
                            )
                        )
            else:
                waiting_since.clear()
                why = await asyncio.to_thread(self._still_open)
                if now - started >= timeout:
                    return False, why
                if now >= next_notice or why != told:  # every few seconds, and at each change
                    next_notice, told = now + NOTICE_EVERY_S, why
                    self.bus.publish(
                        WaitingForRecovery(
                            waited_s=round(now - started, 1), limit_s=timeout, why=why
                        )
                    )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._changed.wait()

    def _still_open(self) -> str:
        tickets = self.runtime.tickets.unresolved(self.runtime.run_id)
        if not tickets:
            return "the last observation is not clean yet"
        parts = []
        for t in tickets:
            text = f"ticket #{t.id} ({t.invariant} on {t.target}) is {t.state}"
            detail = t.escalation_reason if t.state == "escalated" else t.remains
            parts.append(f"{text}: {detail}" if detail else text)
        return "; ".join(parts)

    async def _judge(self) -> RunOutcome:
        expect = self.scenario.expect
        recovered: bool | None = None
        if expect.recovers:
            recovered, waited = await self._await_recovery(expect.recover_timeout)
            if not recovered:
                self.problems.append(
                    waited
                    if waited.startswith("waited")
                    else f"the cluster did not return to healthy within "
                    f"{expect.recover_timeout:g} s; {waited}"
                )
        opened = [e for e in self.events if isinstance(e, TicketOpened)]
        fired = {e.invariant for e in opened}
        expected = list(expect.invariants)
        if expect.any_invariant and expected:
            # One fault may show as any of these first; one of them, on the target, is enough.
            on_target = {
                e.invariant for e in opened if not expect.target or e.target == expect.target
            }
            if on_target & set(expected):
                expected = []
            else:
                expected = [" or ".join(expected)]
        for invariant in expected:
            hits = [e for e in opened if e.invariant == invariant]
            if not hits:
                self.problems.append(f"expected {invariant} to fire; it did not")
            elif expect.target and not any(e.target == expect.target for e in hits):
                targets = sorted({e.target for e in hits})
                self.problems.append(
                    f"expected {invariant} on {expect.target}; it fired on {', '.join(targets)}"
                )
        if expect.action and self.operator_acts and expect.invariants:
            remedy = doing(self.events, expect.action)  # the action, or a chain doing it
            verified = [
                e for e in self.events if isinstance(e, ActionVerified) and e.action_id in remedy
            ]
            if not verified:
                done = sorted(
                    f"{e.action} {e.name.removeprefix('action_')}"
                    for e in self.events
                    if isinstance(e, ActionEvent)
                )
                self.problems.append(
                    f"expected {expect.action} to be verified; actions: {', '.join(done) or 'none'}"
                )
        if not expect.invariants and opened:
            self.problems.append(
                "expected no ticket; opened: " + ", ".join(sorted(str(f) for f in fired))
            )
        summary = self._summary(recovered=recovered)
        return RunOutcome(ok=not self.problems, summary=summary)

    def _summary(self, *, recovered: bool | None) -> dict[str, Any]:
        opened = [e for e in self.events if isinstance(e, TicketOpened)]
        resolved = [e for e in self.events if isinstance(e, TicketResolved)]
        injected = [e for e in self.events if isinstance(e, FaultInjected)]
        detection: dict[str, float] = {}
        if injected:
            first_fault = injected[0].t
            for e in opened:
                key = f"{e.invariant}:{e.target}"
                if e.t >= first_fault and key not in detection:
                    detection[key] = round(e.t - first_fault, 3)
        return {
            "scenario": self.scenario.name,
            "run_id": self.runtime.run_id,
            "expected": list(self.scenario.expect.invariants),
            "fired": sorted({e.invariant for e in opened}),
            "tickets_opened": len(opened),
            "tickets_resolved": len(resolved),
            "detection_s": detection,
            "recovered": recovered,
            "brain": self.runtime.agent.brain.name if self.runtime.agent else None,
            "actions": [
                {"action": e.action, "state": e.state}
                for e in self.events
                if isinstance(e, ActionVerified | ActionNotVerified | ActionFailed)
            ],
            # Per incident: detected, diagnosed, fixed or mitigated after how long.
            SUMMARY_KEY: [s.to_dict() for s in Scoreboard.of(self.events).incidents()],
            "duration_s": round(self.bus.elapsed(), 3),
            "problems": list(self.problems),
        }
