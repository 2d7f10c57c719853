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
from operator_console.contract import (
    ActionCatalog,
    ActionInputError,
    ActionSpec,
    Condition,
    Plan,
    Step,
)
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
    ActionScheduled,
    ActionStep,
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

CHECK_EVERY_S = 0.25  # how often a step's own check is asked while it does not hold yet

ANNOUNCED_STATES: dict[str, type[ActionDecided]] = {
    ActionState.APPROVED.value: ActionApproved,
    ActionState.REJECTED.value: ActionRejected,
    ActionState.EXPIRED.value: ActionExpired,
    ActionState.CANCELLED.value: ActionCancelled,
}


class ChainFailed(RuntimeError):
    """A chain stopped at a failing step; the message says which, why, and what was undone."""


class _Checking:
    """What a step's own check said last, for the message when it never held."""

    def __init__(self) -> None:
        self.last: str | None = None


def _reason(exc: BaseException, spec: ActionSpec, checking: _Checking | None = None) -> str:
    if isinstance(exc, TimeoutError):
        still = f" (its check: {checking.last})" if checking and checking.last else ""
        return f"timed out after {spec.timeout_s:g} s{still}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _params_text(params: dict[str, object]) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items())


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
        self._telling: set[asyncio.Task[None]] = set()
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
        elif isinstance(event, ActionScheduled):
            task = asyncio.create_task(self._scheduled_here(event.action_id))
            self._telling.add(task)
            task.add_done_callback(self._telling.discard)

    async def _scheduled_here(self, action_id: int) -> None:
        row = await asyncio.to_thread(self.actions.get, action_id)
        if row is not None:
            await self._waiting_for_schedule(row)

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
        # Rows that lapse are marked expired in place, and scheduled rows whose time came are
        # approved (or cancelled, their ticket closed) in place: announced below like any change.
        await asyncio.to_thread(self.actions.expire_due, rows)
        await asyncio.to_thread(self.actions.release_due, rows)
        for row in reversed(rows):
            assert row.id is not None
            if self._known.get(row.id) == row.state:
                continue
            if row.state == ActionState.PROPOSED.value:
                # Only this run's own agent proposes, and it announces its proposals itself.
                self._known[row.id] = row.state
            elif row.state == ActionState.SCHEDULED.value:
                at = row.scheduled_for.isoformat() if row.scheduled_for else ""
                self._announce(
                    action_event(
                        ActionScheduled,
                        row,
                        by=row.decided_by,
                        reason=row.policy_reason or row.decision_reason,
                        runs_at=at,
                    )
                )  # the executor hears its own announcement and tells the ticket (_on_event)
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

    async def _waiting_for_schedule(self, row: ActionRow) -> None:
        """The ticket says its fix is approved and when it runs."""
        if row.ticket_id is None:
            return
        ticket = await asyncio.to_thread(self.tickets.get, row.ticket_id)
        if ticket is None or not TicketState(ticket.state).is_active:
            return
        when = f"{row.scheduled_for:%a %H:%M:%S} UTC" if row.scheduled_for else "later"
        self.bus.publish(
            TicketUpdated(
                **ticket.event_fields(),
                reason=f"action #{row.id} ({row.name}) is approved to run at {when}",
            )
        )

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
            plan = self.catalog.plan(row.name, row.params)
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
        counter = [0]
        checking = _Checking()
        try:
            if plan.steps:
                result = await self._run_chain(row, plan)
            else:
                result = await self._attempt(plan.spec, plan.params, counter, checking)
        except asyncio.CancelledError:
            await asyncio.to_thread(
                self.actions.finish,
                action_id,
                ActionState.FAILED,
                expected=ActionState.EXECUTING,
                error="cancelled by the kill switch",
                attempts=counter[0],
            )
            raise
        except Exception as exc:
            reason = str(exc) if isinstance(exc, ChainFailed) else _reason(exc, plan.spec, checking)
            failed = await asyncio.to_thread(
                self.actions.finish,
                action_id,
                ActionState.FAILED,
                expected=ActionState.EXECUTING,
                error=reason,
                attempts=counter[0],
            )
            self._announce(action_event(ActionFailed, failed, error=reason, attempts=counter[0]))
            await self._escalate(row, f"action {row.name} failed: {reason}")
            return
        attempts = counter[0] if not plan.steps else 1
        done = await asyncio.to_thread(
            self.actions.finish,
            action_id,
            ActionState.SUCCEEDED,
            expected=ActionState.EXECUTING,
            result=result,
            attempts=attempts,
        )
        self._announce(action_event(ActionSucceeded, done, result=result, attempts=attempts))
        if not plan.verify:
            return  # a diagnostic reports; it fixes nothing, so there is nothing to verify
        await self._verify(done, plan)

    async def _attempt(
        self,
        spec: ActionSpec,
        params: object,
        counter: list[int],
        checking: _Checking | None = None,
    ) -> str:
        """Run one action (with retries if it allows them), each try within its timeout, and
        where it declares a check, until the check says its effect holds."""
        result = ""
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(self.attempts if spec.retry else 1),
            wait=wait_random_exponential(multiplier=0.5, max=4.0),
            reraise=True,
        ):
            with attempt:
                counter[0] += 1
                async with asyncio.timeout(spec.timeout_s):
                    result = await spec.run(params)
                    if spec.check is not None:
                        result = f"{result}; {await self._until_checked(spec, params, checking)}"
        return result

    async def _until_checked(
        self, spec: ActionSpec, params: object, checking: _Checking | None
    ) -> str:
        assert spec.check is not None
        while True:
            problem = await spec.check(params)
            if checking is not None:
                checking.last = problem
            if problem is None:
                return "its check holds"
            await asyncio.sleep(CHECK_EVERY_S)

    # ------------------------------------------------------------------------------ chains

    async def _step(self, row: ActionRow, index: int, state: str, detail: str = "") -> None:
        assert row.id is not None
        updated, step = await asyncio.to_thread(self.actions.set_step, row.id, index, state, detail)
        self._announce(
            action_event(
                ActionStep,
                updated,
                index=index,
                step=str(step["action"]),
                step_params=dict(step.get("params") or {}),
                step_state=state,
                detail=detail,
            )
        )

    async def _run_chain(self, row: ActionRow, plan: Plan) -> str:
        """Each step in order, with its own retries, timeout and check. A failing step stops
        the chain: the steps after it are skipped and the ones before it are undone (newest
        first) where they declare an undo; ChainFailed says all of it."""
        assert row.id is not None
        if not row.steps:  # proposed where the catalog's plan was not at hand (the CLI)
            await asyncio.to_thread(self.actions.set_steps, row.id, plan.describe_steps())
        done: list[tuple[int, Step]] = []
        results: list[str] = []
        total = len(plan.steps)
        for index, step in enumerate(plan.steps, start=1):
            await self._step(row, index, "executing")
            checking = _Checking()
            try:
                result = await self._attempt(step.spec, step.params, [0], checking)
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await self._step(row, index, "cancelled", "the kill switch")
                raise
            except Exception as exc:
                reason = _reason(exc, step.spec, checking)
                await self._step(row, index, "failed", reason)
                for later in range(index + 1, total + 1):
                    await self._step(row, later, "skipped", f"step {index} failed")
                undone = await self._undo(row, done)
                where = f"{step.name} {_params_text(step.params_json())}".strip()
                raise ChainFailed(
                    f"step {index} of {total} ({where}) failed: {reason}; {undone}"
                ) from None
            await self._step(row, index, "succeeded", result)
            done.append((index, step))
            results.append(f"{index}. {step.name}: {result}")
        return "; ".join(results)

    async def _undo(self, row: ActionRow, done: list[tuple[int, Step]]) -> str:
        """Take back the steps that ran, newest first, where they declare an undo."""
        said: list[str] = []
        for index, step in reversed(done):
            undo = self.catalog.undo_of(step)
            if undo is None:
                continue
            checking = _Checking()
            try:
                result = await self._attempt(undo.spec, undo.params, [0], checking)
            except Exception as exc:
                reason = _reason(exc, undo.spec, checking)
                await self._step(row, index, "undo_failed", f"{undo.name}: {reason}")
                said.append(f"undoing step {index} ({undo.name}) failed: {reason}")
                continue
            await self._step(row, index, "undone", f"{undo.name}: {result}")
            said.append(f"step {index} ({step.name}) undone by {undo.name}")
        if not said:
            return "no step before it declares an undo"
        return "; ".join(said)

    async def _verify(self, row: ActionRow, plan: Plan) -> None:
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
        if ok and plan.effect == "mitigate":
            await self._mitigated(row, plan.cause)
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
