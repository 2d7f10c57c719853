"""Action lifecycle, approvals, mode and kill switch, persisted so that several processes agree.

Every transition is a conditional UPDATE (state must still be what we read), so two processes
approving or rejecting the same action cannot both win; claiming one for execution is a claim
(`operator_console.db.claims`) that consumes the approval in the same transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from operator_console.audit import AuditLog
from operator_console.contract import ActionSpec, params_hash
from operator_console.db.claims import claiming, lock_row
from operator_console.db.models import ActionRow, ApprovalRow, ControlRow, TicketRow
from operator_console.domain import TicketState, utcnow
from operator_console.domain.windows import Windows

DEFAULT_APPROVAL_TTL_S = 600.0
DEFAULT_PROPOSAL_TTL_S = 600.0


class ActionState(StrEnum):
    PROPOSED = "proposed"
    SCHEDULED = "scheduled"  # approved for later: runs at its scheduled_for
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    EXECUTING = "executing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    VERIFIED = "verified"
    NOT_VERIFIED = "not_verified"
    INTERRUPTED = "interrupted"


class Mode(StrEnum):
    OBSERVE = "observe"
    APPROVE = "approve"
    AUTO = "auto"


class ApprovalError(RuntimeError):
    """An approval, rejection or execution is refused; the message says why."""


class ClaimLost(ApprovalError):
    """The action is not this executor's to run: it left `approved` (another executor took it,
    a person rejected it, it expired) or another executor holds it right now."""


def _approval_problem(row: ActionRow, approval: ApprovalRow | None, now: datetime) -> str | None:
    """Why this approval does not let the action run now, or None when it does."""
    if approval is None:
        return "its approval was already used"
    if approval.expires_at <= now:
        return f"its approval expired at {approval.expires_at:%H:%M:%S} UTC"
    if approval.params_hash != row.params_hash or row.params_hash != params_hash(
        row.name, row.params
    ):
        return "its parameters changed after it was approved"
    return None


def _audit(engine: Engine, kind: str, actor: str, row: ActionRow, **extra: Any) -> None:
    AuditLog(engine).append(
        kind,
        actor=actor,
        payload={
            "action": row.name,
            "params": row.params,
            "params_hash": row.params_hash,
            "risk": row.risk,
            "state": row.state,
            **extra,
        },
        run_id=row.run_id,
        ticket_id=row.ticket_id,
        action_id=row.id,
    )


class Controls:
    """The persisted operating mode and kill switch, and a mode for this run only (`run
    --mode`): it holds until a person sets the mode or engages the kill switch."""

    MODE = "mode"
    KILL = "kill_switch"

    def __init__(
        self,
        engine: Engine,
        *,
        default_mode: Mode = Mode.APPROVE,
        run_mode: Mode | None = None,
    ) -> None:
        self._engine = engine
        self._default_mode = default_mode
        self.run_mode = run_mode

    def _get(self, key: str) -> str | None:
        with Session(self._engine) as session:
            row = session.get(ControlRow, key)
            return row.value if row else None

    def _set(self, key: str, value: str, by: str) -> None:
        with Session(self._engine) as session:
            row = session.get(ControlRow, key)
            if row is None:
                row = ControlRow(key=key, value=value, changed_by=by)
            else:
                row.value, row.changed_by, row.changed_at = value, by, utcnow()
            session.add(row)
            session.commit()

    def mode(self) -> Mode:
        if self.run_mode is not None and not self.kill_switch():
            return self.run_mode
        return self.persisted_mode()

    def persisted_mode(self) -> Mode:
        """The mode every console starts in (`operator-console mode set`, `m`)."""
        value = self._get(self.MODE)
        return Mode(value) if value is not None and value in set(Mode) else self._default_mode

    def kill_switch(self) -> bool:
        return self._get(self.KILL) == "on"

    def set_mode(self, mode: Mode, *, by: str) -> Mode:
        """Change the mode; refused while the kill switch is on (except to observe)."""
        if self.kill_switch() and mode is not Mode.OBSERVE:
            raise ApprovalError("the kill switch is on: lift it first (kill-switch off)")
        previous = self.mode()
        self._set(self.MODE, mode.value, by)
        self.run_mode = None  # a person chose: this run follows the persisted mode again
        AuditLog(self._engine).append(
            "mode_changed", actor=by, payload={"from": previous.value, "to": mode.value}
        )
        return previous

    def set_kill_switch(self, on: bool, *, by: str) -> list[ActionRow]:
        """Kill switch on: force observe and cancel every pending action (returned)."""
        self._set(self.KILL, "on" if on else "off", by)
        AuditLog(self._engine).append("kill_switch", actor=by, payload={"on": on})
        if not on:
            return []
        self.run_mode = None
        self._set(self.MODE, Mode.OBSERVE.value, by)
        return ActionRepository(self._engine).cancel_pending(by=by, reason="kill switch")


# Approved or approved for later, not yet running: what a person may still reject and the kill
# switch cancels.
PENDING = (ActionState.PROPOSED.value, ActionState.SCHEDULED.value, ActionState.APPROVED.value)


def _when(text: datetime) -> str:
    return f"{text:%a %Y-%m-%d %H:%M:%S} UTC"


class ActionRepository:
    """Actions in the database. `clock` is the time everything here is judged by (expiry,
    schedules, maintenance windows); tests pass their own."""

    def __init__(self, engine: Engine, *, clock: Callable[[], datetime] = utcnow) -> None:
        self._engine = engine
        self.now = clock

    def get(self, action_id: int) -> ActionRow | None:
        with Session(self._engine, expire_on_commit=False) as session:
            return session.get(ActionRow, action_id)

    def find(
        self,
        *,
        run_id: str | None = None,
        ticket_id: int | None = None,
        states: list[str] | None = None,
        limit: int = 50,
    ) -> list[ActionRow]:
        with Session(self._engine, expire_on_commit=False) as session:
            query = select(ActionRow)
            if run_id is not None:
                query = query.where(ActionRow.run_id == run_id)
            if ticket_id is not None:
                query = query.where(ActionRow.ticket_id == ticket_id)
            if states:
                query = query.where(col(ActionRow.state).in_(states))
            return list(session.exec(query.order_by(col(ActionRow.id).desc()).limit(limit)))

    def touching(
        self, targets: list[str], *, system: str, since: datetime, limit: int = 500
    ) -> list[ActionRow]:
        """Actions on `system` created since `since` that touch any of `targets`, newest first."""
        wanted = set(targets)
        with Session(self._engine, expire_on_commit=False) as session:
            rows = session.exec(
                select(ActionRow)
                .where(col(ActionRow.created_at) >= since, ActionRow.system == system)
                .order_by(col(ActionRow.id).desc())
                .limit(limit)
            )
            return [row for row in rows if wanted & set(row.targets or [])]

    def propose(
        self,
        spec: ActionSpec,
        params: dict[str, Any],
        *,
        proposed_by: str,
        reason: str,
        run_id: str | None,
        ticket_id: int | None,
        restores: str = "",
        ttl_s: float = DEFAULT_PROPOSAL_TTL_S,
        targets: list[str] | None = None,
        decision: str = "",
        policy_reason: str = "",
        system: str = "",
        risk: str | None = None,
        steps: list[dict[str, Any]] | None = None,
    ) -> ActionRow:
        """Record a proposal; a chain's `risk` is its riskiest step's, and its `steps` are
        stored with it (each pending) so the approval names every one."""
        row = ActionRow(
            run_id=run_id,
            ticket_id=ticket_id,
            name=spec.name,
            params=params,
            params_hash=params_hash(spec.name, params),
            risk=risk or spec.risk,
            restores=restores,
            reason=reason,
            targets=list(targets if targets is not None else spec.targets(params)),
            decision=decision,
            policy_reason=policy_reason,
            system=system,
            proposed_by=proposed_by,
            state=ActionState.PROPOSED.value,
            expires_at=self.now() + timedelta(seconds=ttl_s),
            steps=steps,
        )
        with Session(self._engine, expire_on_commit=False) as session:
            session.add(row)
            session.commit()
            session.refresh(row)
        extra: dict[str, Any] = {"steps": steps} if steps else {}
        _audit(self._engine, "action_proposed", proposed_by, row, reason=reason, **extra)
        return row

    def _transition(
        self, action_id: int, expected: ActionState, new: ActionState, **values: Any
    ) -> bool:
        with Session(self._engine) as session:
            result = session.execute(
                update(ActionRow)
                .where(col(ActionRow.id) == action_id, col(ActionRow.state) == expected.value)
                .values(state=new.value, **values)
            )
            session.commit()
            return bool(getattr(result, "rowcount", 0) == 1)

    def _require(self, action_id: int) -> ActionRow:
        row = self.get(action_id)
        if row is None:
            raise ApprovalError(f"no action {action_id}; see `operator-console actions list`")
        return row

    def _expire_if_due(self, row: ActionRow) -> None:
        if row.expires_at is not None and row.expires_at <= self.now():
            assert row.id is not None
            if self._transition(row.id, ActionState(row.state), ActionState.EXPIRED):
                row.state = ActionState.EXPIRED.value
                _audit(self._engine, "action_expired", "policy", row)
            raise ApprovalError(f"action {row.id} expired at {row.expires_at:%H:%M:%S} UTC")

    def approve(
        self,
        action_id: int,
        *,
        by: str,
        reason: str = "",
        ttl_s: float = DEFAULT_APPROVAL_TTL_S,
        controls: Controls | None = None,
        at: datetime | None = None,
        windows: Windows | None = None,
        run_now: bool = False,
    ) -> ApprovalRow:
        """Approve a proposal: to run now, or at `at` (then it waits in `scheduled`). A
        high-risk action outside every maintenance window waits for the next one, unless
        `run_now` (a person's `--now`). The approval lasts `ttl_s` from when it may run."""
        row = self._require(action_id)
        controls = controls or Controls(self._engine)
        if controls.kill_switch():
            raise ApprovalError("the kill switch is on: nothing may be approved")
        if row.state != ActionState.PROPOSED.value:
            raise ApprovalError(f"action {action_id} is {row.state}, not proposed")
        self._expire_if_due(row)
        now = self.now()
        if at is not None and at.tzinfo is None:
            raise ApprovalError("a scheduled time needs its time zone (e.g. 2026-12-05T02:00Z)")
        why_later = ""
        if at is not None and at > now:
            why_later = f"scheduled by {by} for {_when(at)}"
        elif windows and row.risk == "high" and not run_now and not windows.open_at(now):
            at = windows.next_opening(now)
            if at is not None:
                why_later = (
                    f"high risk: waits for the maintenance window ({windows.describe()}), "
                    f"next open {_when(at)}; approve with --now to run it at once"
                )
        later = at is not None and at > now
        runs_from = at if later and at is not None else now
        approval = ApprovalRow(
            action_id=action_id,
            params_hash=row.params_hash,
            approved_by=by,
            reason=reason,
            expires_at=runs_from + timedelta(seconds=ttl_s),
        )
        values: dict[str, Any] = {
            "state": (ActionState.SCHEDULED if later else ActionState.APPROVED).value,
            "decided_at": now,
            "decided_by": by,
            "decision_reason": reason,
        }
        if later:
            values["scheduled_for"] = at
            values["expires_at"] = runs_from + timedelta(seconds=ttl_s)
            values["policy_reason"] = (
                f"{row.policy_reason}; {why_later}" if row.policy_reason else why_later
            )
        # One transaction: an executor never sees the action approved without its approval.
        with Session(self._engine, expire_on_commit=False) as session:
            moved = session.execute(
                update(ActionRow)
                .where(
                    col(ActionRow.id) == action_id,
                    col(ActionRow.state) == ActionState.PROPOSED.value,
                )
                .values(**values)
            )
            if getattr(moved, "rowcount", 0) != 1:
                session.rollback()
                current = self._require(action_id)
                raise ApprovalError(f"action {action_id} is {current.state}, not proposed")
            session.add(approval)
            session.commit()
            session.refresh(approval)
        row.state = values["state"]
        if later:
            row.scheduled_for, row.policy_reason = at, values["policy_reason"]
            _audit(
                self._engine,
                "action_scheduled",
                by,
                row,
                reason=reason,
                at=runs_from.isoformat(),
                why=why_later,
                approval_id=approval.id,
            )
        else:
            _audit(self._engine, "action_approved", by, row, reason=reason, approval_id=approval.id)
        return approval

    def release_due(self, rows: list[ActionRow]) -> list[ActionRow]:
        """Scheduled actions among `rows` whose time has come: approved now, or cancelled when
        their ticket closed meanwhile (nothing is left to fix). Returns those that moved."""
        now = self.now()
        moved: list[ActionRow] = []
        for row in rows:
            if row.state != ActionState.SCHEDULED.value:
                continue
            if row.scheduled_for is None or row.scheduled_for > now:
                continue
            assert row.id is not None
            closed = self._closed_ticket(row.ticket_id)
            if closed is not None:
                reason = f"ticket #{row.ticket_id} was {closed} before the action's time"
                if self._transition(
                    row.id, ActionState.SCHEDULED, ActionState.CANCELLED, decision_reason=reason
                ):
                    row.state, row.decision_reason = ActionState.CANCELLED.value, reason
                    _audit(self._engine, "action_cancelled", "policy", row, reason=reason)
                    moved.append(row)
                continue
            if self._transition(row.id, ActionState.SCHEDULED, ActionState.APPROVED):
                row.state = ActionState.APPROVED.value
                _audit(self._engine, "action_due", "policy", row, at=now.isoformat())
                moved.append(row)
        return moved

    def _closed_ticket(self, ticket_id: int | None) -> str | None:
        """The state of the action's ticket when it is no longer active, else None."""
        if ticket_id is None:
            return None
        with Session(self._engine) as session:
            ticket = session.get(TicketRow, ticket_id)
        if ticket is None or TicketState(ticket.state).is_active:
            return None
        return ticket.state

    def set_steps(self, action_id: int, steps: list[dict[str, Any]]) -> None:
        """Store a chain's steps (each pending) with an action that was proposed without them."""
        with Session(self._engine) as session:
            session.execute(
                update(ActionRow).where(col(ActionRow.id) == action_id).values(steps=steps)
            )
            session.commit()

    def set_step(
        self, action_id: int, index: int, state: str, detail: str = ""
    ) -> tuple[ActionRow, dict[str, Any]]:
        """Record one chain step's new state (and what it said); returns the row and the step."""
        with Session(self._engine, expire_on_commit=False) as session:
            row = session.get(ActionRow, action_id)
            if row is None or not row.steps:
                raise ApprovalError(f"action {action_id} has no steps")
            steps = [dict(step) for step in row.steps]
            step = steps[index - 1]
            step["state"] = state
            if detail:
                step["detail"] = detail
            step["at"] = self.now().isoformat()
            row.steps = steps  # a new list, so the JSON column is written
            session.add(row)
            session.commit()
            session.refresh(row)
        _audit(
            self._engine,
            "action_step",
            "executor",
            row,
            index=index,
            step=step["action"],
            step_params=step.get("params", {}),
            step_state=state,
            detail=detail,
        )
        return row, step

    def reject(self, action_id: int, *, by: str, reason: str) -> ActionRow:
        row = self._require(action_id)
        for state in (ActionState.PROPOSED, ActionState.SCHEDULED, ActionState.APPROVED):
            if self._transition(
                action_id,
                state,
                ActionState.REJECTED,
                decided_at=self.now(),
                decided_by=by,
                decision_reason=reason,
            ):
                row.state = ActionState.REJECTED.value
                _audit(self._engine, "action_rejected", by, row, reason=reason)
                return row
        raise ApprovalError(f"action {action_id} is {row.state}: too late to reject it")

    def claim(self, action_id: int, controls: Controls) -> ActionRow:
        """Consume the action's approval and mark it executing, re-checking everything.

        One transaction holds the action's row from the check to the change, so of several
        executors (consoles, processes) on one database exactly one gets the action; the
        others get `ClaimLost`. A refused approval rejects the action in that transaction."""
        row = self._require(action_id)
        if row.state != ActionState.APPROVED.value:
            raise ClaimLost(f"action {action_id} is {row.state}, not approved")
        if controls.kill_switch():
            raise ApprovalError("the kill switch is on")
        if controls.mode() is Mode.OBSERVE:
            raise ApprovalError("mode is observe: nothing executes")
        now = self.now()
        with claiming(self._engine) as session:
            locked = lock_row(session, ActionRow, action_id, skip_locked=True)
            if locked is None:
                raise ClaimLost(f"action {action_id} is being claimed by another process")
            if locked.state != ActionState.APPROVED.value:
                raise ClaimLost(f"action {action_id} is {locked.state}, not approved")
            # Nobody else consumes this action's approvals while its row is held.
            approval = session.exec(
                select(ApprovalRow)
                .where(ApprovalRow.action_id == action_id)
                .where(col(ApprovalRow.used_at).is_(None))
                .order_by(col(ApprovalRow.id).desc())
            ).first()
            problem = _approval_problem(locked, approval, now)
            if problem is None:
                assert approval is not None
                approval.used_at = now
                locked.state = ActionState.EXECUTING.value
                session.add(approval)
            else:
                locked.state = ActionState.REJECTED.value
                locked.decision_reason = problem
            session.add(locked)
            session.commit()
        if problem is not None:
            _audit(self._engine, "action_refused", "policy", locked, reason=problem)
            raise ApprovalError(f"action {action_id} refused: {problem}")
        _audit(self._engine, "action_executing", "executor", locked)
        return locked

    def finish(
        self,
        action_id: int,
        state: ActionState,
        *,
        expected: ActionState,
        result: str | None = None,
        error: str | None = None,
        attempts: int | None = None,
    ) -> ActionRow:
        values: dict[str, Any] = {"finished_at": self.now()}
        if result is not None:
            values["result"] = result
        if error is not None:
            values["error"] = error
        if attempts is not None:
            values["attempts"] = attempts
        self._transition(action_id, expected, state, **values)
        row = self._require(action_id)
        _audit(self._engine, f"action_{state.value}", "executor", row, error=error, result=result)
        return row

    def expire_due(self, rows: list[ActionRow] | None = None) -> list[ActionRow]:
        """Proposals past their expiry, and approvals that lapsed unused (among `rows` when
        the caller has just read them)."""
        now = self.now()
        expired: list[ActionRow] = []
        pending = list(PENDING)
        candidates = self.find(states=pending) if rows is None else rows
        for row in (r for r in candidates if r.state in pending):
            if row.expires_at is not None and row.expires_at <= now:
                assert row.id is not None
                if self._transition(row.id, ActionState(row.state), ActionState.EXPIRED):
                    row.state = ActionState.EXPIRED.value
                    _audit(self._engine, "action_expired", "policy", row)
                    expired.append(row)
        return expired

    def cancel_pending(self, *, by: str, reason: str) -> list[ActionRow]:
        cancelled = []
        for row in self.find(states=list(PENDING), limit=1000):
            assert row.id is not None
            if self._transition(
                row.id, ActionState(row.state), ActionState.CANCELLED, decision_reason=reason
            ):
                row.state = ActionState.CANCELLED.value
                _audit(self._engine, "action_cancelled", by, row, reason=reason)
                cancelled.append(row)
        return cancelled

    def mark_interrupted(self, live_runs: Collection[str] = ()) -> list[ActionRow]:
        """Executions cut off by a crash: never re-run without a new approval. Actions of the
        runs in `live_runs` are still executing somewhere and are left alone."""
        interrupted = []
        for row in self.find(states=[ActionState.EXECUTING.value], limit=1000):
            assert row.id is not None
            if row.run_id in live_runs:
                continue
            if self._transition(
                row.id,
                ActionState.EXECUTING,
                ActionState.INTERRUPTED,
                error="the console stopped while this action ran",
            ):
                row.state = ActionState.INTERRUPTED.value
                _audit(self._engine, "action_interrupted", "executor", row)
                interrupted.append(row)
        return interrupted
