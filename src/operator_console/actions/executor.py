"""The executor: runs approved actions (timeouts, bounded retries), then proves they worked.

It polls the database rather than trusting in-process calls, so an approval given from another
process (`operator-console actions approve`) is seen the same way as one given by the policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable

from tenacity import AsyncRetrying, stop_after_attempt, wait_random_exponential

from operator_console.actions.catalog import ActionCatalog, ActionInputError
from operator_console.actions.store import (
    ActionRepository,
    ActionState,
    ApprovalError,
    Controls,
)
from operator_console.db.models import ActionRow
from operator_console.db.tickets import TicketRepository
from operator_console.domain import TicketState
from operator_console.events import EventBus

log = logging.getLogger(__name__)

ANNOUNCED_STATES = {
    ActionState.APPROVED.value: "action_approved",
    ActionState.REJECTED.value: "action_rejected",
    ActionState.EXPIRED.value: "action_expired",
    ActionState.CANCELLED.value: "action_cancelled",
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
                if event.name != "observation":
                    continue
                seen += 1
                sources = event.fields.get("sources", {}).values()
                ok = all(s.get("state") == "ok" for s in sources)
                violating = dedup_key in event.fields.get("violations", [])
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
        poll_s: float = 0.3,
        on_idle: Callable[[], None] | None = None,
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
        self._known: dict[int, str] = {}
        self._running: dict[int, asyncio.Task[None]] = {}
        self._kill_switch = False
        self._mode = controls.mode()

    async def run(self) -> None:
        while True:
            try:
                await self.poll()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("executor poll failed")
            await asyncio.sleep(self.poll_s)

    def _announce(self, row: ActionRow, name: str, **extra: object) -> None:
        assert row.id is not None
        self._known[row.id] = row.state
        self.bus.publish(
            name,
            action_id=row.id,
            ticket_id=row.ticket_id,
            action=row.name,
            params=row.params,
            risk=row.risk,
            state=row.state,
            **extra,
        )

    async def poll(self) -> None:
        kill = await asyncio.to_thread(self.controls.kill_switch)
        mode = await asyncio.to_thread(self.controls.mode)
        if kill != self._kill_switch:
            self._kill_switch = kill
            self.bus.publish("kill_switch", on=kill)
            if kill:
                for task in self._running.values():
                    task.cancel()
        if mode != self._mode:
            self.bus.publish("mode_changed", mode=mode.value, previous=self._mode.value)
            self._mode = mode
        rows = await asyncio.to_thread(self.actions.find, run_id=self.run_id, limit=200)
        # Rows that lapse are marked expired in place and announced below like any change.
        await asyncio.to_thread(self.actions.expire_due, rows)
        for row in reversed(rows):
            assert row.id is not None
            if self._known.get(row.id) == row.state:
                continue
            if row.state == ActionState.PROPOSED.value:
                self._announce(row, "action_proposed", reason=row.reason)
            elif row.state in ANNOUNCED_STATES:
                self._announce(
                    row,
                    ANNOUNCED_STATES[row.state],
                    by=row.decided_by,
                    reason=row.decision_reason,
                )
                if row.state != ActionState.APPROVED.value and row.ticket_id is not None:
                    await asyncio.to_thread(self._release_ticket, row.ticket_id)
            else:
                self._known[row.id] = row.state
            if row.state == ActionState.APPROVED.value and row.id not in self._running:
                task = asyncio.create_task(self._execute(row.id), name=f"action-{row.id}")
                self._running[row.id] = task
                task.add_done_callback(functools.partial(self._forget, row.id))

    def _forget(self, action_id: int, _task: asyncio.Task[None]) -> None:
        self._running.pop(action_id, None)

    def _release_ticket(self, ticket_id: int) -> None:
        """A rejected or lapsed action hands the ticket back to the monitor."""
        ticket = self.tickets.get(ticket_id)
        if ticket is not None and TicketState(ticket.state).is_active:
            self.tickets.release(ticket_id)

    async def _execute(self, action_id: int) -> None:
        try:
            row = await asyncio.to_thread(self.actions.claim, action_id, self.controls)
        except ApprovalError as exc:
            log.warning("%s", exc)
            refused = await asyncio.to_thread(self.actions.get, action_id)
            if refused is not None:
                self._announce(refused, "action_rejected", by="policy", reason=str(exc))
            return
        self._announce(row, "action_executing")
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
            self._announce(failed, "action_failed", error=str(exc))
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
            self._announce(failed, "action_failed", error=reason, attempts=attempts)
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
        self._announce(done, "action_succeeded", result=result, attempts=attempts)
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
        self._announce(finished, f"action_{state.value}", detail=detail)
        if row.ticket_id is None:
            return
        if ok:
            ticket = await asyncio.to_thread(self.tickets.resolve_by_agent, row.ticket_id)
            if ticket is not None:
                self.bus.publish(
                    "ticket_resolved",
                    **ticket.event_fields(),
                    by="agent",
                    action_id=row.id,
                )
        else:
            await self._escalate(row, f"{row.name} ran but did not fix it: {detail}")

    async def _escalate(self, row: ActionRow, reason: str) -> None:
        if row.ticket_id is None:
            return
        ticket = await asyncio.to_thread(self.tickets.escalate, row.ticket_id, reason)
        self.bus.publish(
            "ticket_escalated",
            **ticket.event_fields(),
            reason=reason,
        )

    async def stop(self) -> None:
        for task in list(self._running.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
