"""The executor: runs approved actions (timeouts, bounded retries), then proves they worked.

It acts at once on this process's events (the policy's or a person's approval in the console)
and polls the database only for decisions made elsewhere (`operator-console actions approve`, a
second console). Every approval is re-checked against the database when the action is claimed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable

from tenacity import AsyncRetrying, stop_after_attempt, wait_random_exponential

from operator_console.actions.decisions import action_event
from operator_console.actions.store import (
    ActionRepository,
    ActionState,
    ApprovalError,
    ClaimLost,
    Controls,
)
from operator_console.contract import ActionCatalog, ActionInputError, Condition
from operator_console.db.models import ActionRow
from operator_console.db.tickets import TicketRepository
from operator_console.domain import TicketState
from operator_console.domain.bus import EventBus
from operator_console.domain.events import (
    ActionApproved,
    ActionCancelled,
    ActionDecided,
    ActionEvent,
    ActionExecuting,
    ActionExpired,
    ActionFailed,
    ActionNotVerified,
    ActionRejected,
    ActionSucceeded,
    ActionVerified,
    Event,
    KillSwitch,
    ModeChanged,
    Observed,
    TicketEscalated,
    TicketMitigated,
    TicketResolved,
    TicketUpdated,
)

log = logging.getLogger(__name__)

ANNOUNCED_STATES: dict[str, type[ActionDecided]] = {
    ActionState.APPROVED.value: ActionApproved,
    ActionState.REJECTED.value: ActionRejected,
    ActionState.EXPIRED.value: ActionExpired,
    ActionState.CANCELLED.value: ActionCancelled,
}


class Verifier:
    """Re-observes until a ticket's violation stays clear for `clean_ticks` observations."""

    def __init__(self, bus: EventBus, *, clean_ticks: int = 3, timeout_s: float = 45.0) -> None:
        self.bus = bus
        self.clean_ticks = clean_ticks
        self.timeout_s = timeout_s

    async def verify(self, dedup_key: str) -> tuple[bool, str]:
        clean = 0
        seen = 0
        deadline = time.monotonic() + self.timeout_s
        async with self.bus.subscribe() as queue:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False, (
                        f"{dedup_key} not clear for {self.clean_ticks} observations in a row "
                        f"within {self.timeout_s:g} s ({seen} observations, last run {clean})"
                    )
                try:
                    async with asyncio.timeout(remaining):
                        event = await queue.get()
                except TimeoutError:
                    continue
                if not isinstance(event, Observed):
                    continue
                seen += 1
                ok = all(s.get("state") == "ok" for s in event.sources.values())
                violating = dedup_key in event.violations
                clean = clean + 1 if ok and not violating else 0
                if clean >= self.clean_ticks:
                    return True, f"{dedup_key} clear for {clean} observations in a row"


class Executor:
    def __init__(
        self,
        actions: ActionRepository,
        controls: Controls,
        tickets: TicketRepository,
        catalog: ActionCatalog,
        bus: EventBus,
        verifier: Verifier,
        *,
        run_id: str,
        attempts: int = 3,
        poll_s: float = 1.0,
        condition: Callable[[str, str], Condition | None] | None = None,
    ) -> None:
        self.actions = actions
        self.controls = controls
        self.tickets = tickets
        self.catalog = catalog
        self.bus = bus
        self.verifier = verifier
        self.run_id = run_id
        self.attempts = attempts
        self.poll_s = poll_s
        self.condition = condition
        self._known: dict[int, str] = {}
        self._running: dict[int, asyncio.Task[None]] = {}
        self._kill_switch = False
        self._mode = controls.mode()

    async def run(self) -> None:
        """React to this process's action events at once; poll the database for the rest."""
        async with self.bus.subscribe() as queue:
            next_poll = 0.0
            while True:
                if time.monotonic() >= next_poll:
                    try:
                        await self.poll()
                    except asyncio.CancelledError:
                        raise
                    except Exception:
                        log.exception("executor poll failed")
                    next_poll = time.monotonic() + self.poll_s
                try:
                    async with asyncio.timeout(max(0.0, next_poll - time.monotonic())):
                        event = await queue.get()
                except TimeoutError:
                    continue
                self._on_event(event)

    def _on_event(self, event: Event) -> None:
        """An action event of this process: remember its state; run what was approved."""
        if not isinstance(event, ActionEvent):
            return
        self._known[event.action_id] = event.state
        if isinstance(event, ActionApproved):
            self._start(event.action_id)

    def _start(self, action_id: int) -> None:
        if action_id in self._running or self._kill_switch:
            return
        task = asyncio.create_task(self._execute(action_id), name=f"action-{action_id}")
        self._running[action_id] = task
        task.add_done_callback(functools.partial(self._forget, action_id))

    def _announce(self, event: ActionEvent) -> None:
        self._known[event.action_id] = event.state
        self.bus.publish(event)

    async def poll(self) -> None:
        kill = await asyncio.to_thread(self.controls.kill_switch)
        mode = await asyncio.to_thread(self.controls.mode)
        if kill != self._kill_switch:
            self._kill_switch = kill
            self.bus.publish(KillSwitch(on=kill))
            if kill:
                for task in self._running.values():
                    task.cancel()
        if mode != self._mode:
            self.bus.publish(ModeChanged(mode=mode.value, previous=self._mode.value))
            self._mode = mode
        rows = await asyncio.to_thread(self.actions.find, run_id=self.run_id, limit=200)
        # Rows that lapse are marked expired in place and announced below like any change.
        await asyncio.to_thread(self.actions.expire_due, rows)
        for row in reversed(rows):
            assert row.id is not None
            if self._known.get(row.id) == row.state:
                continue
            if row.state == ActionState.PROPOSED.value:
                # Only this run's own agent proposes, and it announces its proposals itself.
                self._known[row.id] = row.state
            elif row.state in ANNOUNCED_STATES:
                self._announce(
                    action_event(
                        ANNOUNCED_STATES[row.state],
                        row,
                        by=row.decided_by,
                        reason=row.decision_reason,
                    )
                )
                if row.ticket_id is not None:
                    await self._after_decision(row)
            else:
                self._known[row.id] = row.state
            if row.state == ActionState.APPROVED.value:
                self._start(row.id)

    def _forget(self, action_id: int, _task: asyncio.Task[None]) -> None:
        self._running.pop(action_id, None)

    async def _after_decision(self, row: ActionRow) -> None:
        """A proposal nobody decided in time goes to a person; a cancelled one hands the ticket
        back to the monitor. (A rejection goes back to the agent, which listens for it.)"""
        assert row.ticket_id is not None
        ticket = await asyncio.to_thread(self.tickets.get, row.ticket_id)
        if ticket is None or not TicketState(ticket.state).is_active:
            return
        if row.state == ActionState.EXPIRED.value:
            await self._escalate(
                row, f"nobody decided on action #{row.id} ({row.name} {row.params}) in time"
            )
        elif row.state == ActionState.CANCELLED.value:
            released = await asyncio.to_thread(self.tickets.release, row.ticket_id)
            if released is not None:
                self.bus.publish(
                    TicketUpdated(**released.event_fields(), reason=row.decision_reason)
                )

    async def _execute(self, action_id: int) -> None:
        try:
            row = await asyncio.to_thread(self.actions.claim, action_id, self.controls)
        except ClaimLost as exc:
            # Another executor has it: the next poll reads and announces what it became.
            log.info("%s", exc)
            self._known.pop(action_id, None)
            return
        except ApprovalError as exc:
            log.warning("%s", exc)
            refused = await asyncio.to_thread(self.actions.get, action_id)
            if refused is not None and self._known.get(action_id) != refused.state:
                self._announce(action_event(ActionRejected, refused, by="policy", reason=str(exc)))
            return
        except Exception:
            # The database did not answer (locked too long, connection lost): try again later.
            log.exception("claiming action %s failed", action_id)
            self._known.pop(action_id, None)
            return
        self._announce(action_event(ActionExecuting, row))
        try:
            spec = self.catalog.get(row.name)
            params = spec.validate(row.params)
        except ActionInputError as exc:
            failed = await asyncio.to_thread(
                self.actions.finish,
                action_id,
                ActionState.FAILED,
                expected=ActionState.EXECUTING,
                error=str(exc),
                attempts=0,
            )
            self._announce(action_event(ActionFailed, failed, error=str(exc)))
            return
        attempts = 0
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self.attempts if spec.retry else 1),
                wait=wait_random_exponential(multiplier=0.5, max=4.0),
                reraise=True,
            ):
                with attempt:
                    attempts += 1
                    async with asyncio.timeout(spec.timeout_s):
                        result = await spec.run(params)
        except asyncio.CancelledError:
            await asyncio.to_thread(
                self.actions.finish,
                action_id,
                ActionState.FAILED,
                expected=ActionState.EXECUTING,
                error="cancelled by the kill switch",
                attempts=attempts,
            )
            raise
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if isinstance(exc, TimeoutError):
                reason = f"timed out after {spec.timeout_s:g} s"
            failed = await asyncio.to_thread(
                self.actions.finish,
                action_id,
                ActionState.FAILED,
                expected=ActionState.EXECUTING,
                error=reason,
                attempts=attempts,
            )
            self._announce(action_event(ActionFailed, failed, error=reason, attempts=attempts))
            await self._escalate(row, f"action {row.name} failed: {reason}")
            return
        done = await asyncio.to_thread(
            self.actions.finish,
            action_id,
            ActionState.SUCCEEDED,
            expected=ActionState.EXECUTING,
            result=result,
            attempts=attempts,
        )
        self._announce(action_event(ActionSucceeded, done, result=result, attempts=attempts))
        if not spec.verify:
            return  # a diagnostic reports; it fixes nothing, so there is nothing to verify
        await self._verify(done)

    async def _verify(self, row: ActionRow) -> None:
        assert row.id is not None
        ok, detail = await self.verifier.verify(row.restores)
        state = ActionState.VERIFIED if ok else ActionState.NOT_VERIFIED
        finished = await asyncio.to_thread(
            self.actions.finish, row.id, state, expected=ActionState.SUCCEEDED, result=detail
        )
        verdict = ActionVerified if ok else ActionNotVerified
        self._announce(action_event(verdict, finished, detail=detail))
        if row.ticket_id is None:
            return
        spec = self.catalog.get(row.name) if row.name in self.catalog.names() else None
        if ok and spec is not None and spec.effect == "mitigate":
            await self._mitigated(row, spec.cause)
            return
        if ok:
            ticket = await asyncio.to_thread(self.tickets.resolve_by_agent, row.ticket_id)
            if ticket is not None:
                self.bus.publish(
                    TicketResolved(**ticket.event_fields(), by="agent", action_id=row.id)
                )
        else:
            await self._escalate(row, f"{row.name} ran but did not fix it: {detail}")

    async def _mitigated(self, row: ActionRow, cause: str | None) -> None:
        """The symptom is gone but the cause is not: the ticket says what remains."""
        assert row.id is not None and row.ticket_id is not None
        target = ", ".join(row.targets) or "the system"
        condition = self.condition(cause, target) if cause and self.condition else None
        remains = condition.remains if condition is not None else "the cause is still there"
        text = f"{row.name} on {target} verified as a mitigation; {remains}"
        ticket = await asyncio.to_thread(
            self.tickets.mitigate, row.ticket_id, action_id=row.id, cause=cause, remains=text
        )
        if ticket is not None:
            self.bus.publish(
                TicketMitigated(**ticket.event_fields(), action_id=row.id, cause=cause or "")
            )

    async def _escalate(self, row: ActionRow, reason: str) -> None:
        if row.ticket_id is None:
            return
        ticket = await asyncio.to_thread(self.tickets.escalate, row.ticket_id, reason)
        self.bus.publish(TicketEscalated(**ticket.event_fields(), reason=reason))

    async def stop(self) -> None:
        for task in list(self._running.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
