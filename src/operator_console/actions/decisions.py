"""A person's decisions in this process: recorded in the database and told to the loops at once.

Decisions made in another process (the CLI, a second console) reach the executor through its
poll of the database instead.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

from operator_console.actions.store import ActionRepository, ActionState, Controls
from operator_console.db.models import ActionRow, ApprovalRow
from operator_console.domain.bus import EventBus
from operator_console.domain.events import (
    ActionApproved,
    ActionEvent,
    ActionRejected,
    ActionScheduled,
)
from operator_console.domain.windows import Windows

A = TypeVar("A", bound=ActionEvent)


def action_event(cls: type[A], row: ActionRow, **extra: Any) -> A:
    """An action event built from the action's row as it is now."""
    assert row.id is not None, "a stored action has an id"
    return cls(
        action_id=row.id,
        ticket_id=row.ticket_id,
        action=row.name,
        params=dict(row.params),
        risk=row.risk,
        state=row.state,
        **extra,
    )


class Decisions:
    """Approve and reject on behalf of someone in this process; blocking (call from a thread)."""

    def __init__(
        self,
        actions: ActionRepository,
        controls: Controls,
        bus: EventBus,
        *,
        windows: Windows | None = None,
    ) -> None:
        self.actions = actions
        self.controls = controls
        self.bus = bus
        self.windows = windows or Windows()

    def approve(
        self,
        action_id: int,
        *,
        by: str,
        reason: str = "",
        at: datetime | None = None,
        run_now: bool = False,
    ) -> ApprovalRow:
        """Approve to run now, at `at`, or (high risk outside the maintenance windows) at the
        next window unless `run_now`."""
        approval = self.actions.approve(
            action_id,
            by=by,
            reason=reason,
            controls=self.controls,
            at=at,
            windows=self.windows,
            run_now=run_now,
        )
        row = self.actions.get(action_id)
        assert row is not None
        if row.state == ActionState.SCHEDULED.value and row.scheduled_for is not None:
            self.bus.publish(
                action_event(
                    ActionScheduled,
                    row,
                    by=by,
                    reason=row.policy_reason or reason,
                    runs_at=row.scheduled_for.isoformat(),
                )
            )
        else:
            self.bus.publish(action_event(ActionApproved, row, by=by, reason=reason))
        return approval

    def reject(self, action_id: int, *, by: str, reason: str) -> ActionRow:
        row = self.actions.reject(action_id, by=by, reason=reason)
        self.bus.publish(action_event(ActionRejected, row, by=by, reason=reason))
        return row
