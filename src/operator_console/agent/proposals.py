"""From a recommendation to a recorded proposal: validate it against the catalog, measure its
scope and blast radius, let the policy decide, and say so on the bus and in the audit log."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from operator_console.actions.decisions import Decisions, action_event
from operator_console.actions.policy import Decision, Scope, decide
from operator_console.actions.store import ActionRepository, ActionState, ApprovalError, Controls
from operator_console.agent.scope import Investigation
from operator_console.contract import ActionCatalog, ActionInputError, Diagnosis
from operator_console.db.models import ActionRow, TicketRow
from operator_console.db.tickets import TicketRepository
from operator_console.domain import TicketState, utcnow
from operator_console.domain.bus import EventBus
from operator_console.domain.events import ActionInvalid, ActionProposed, TicketUpdated

log = logging.getLogger(__name__)

# States in which an action on a target is still running or not yet proven to have worked.
IN_FLIGHT = (ActionState.APPROVED.value, ActionState.EXECUTING.value, ActionState.SUCCEEDED.value)
RAN = (
    ActionState.EXECUTING.value,
    ActionState.SUCCEEDED.value,
    ActionState.VERIFIED.value,
    ActionState.NOT_VERIFIED.value,
    ActionState.FAILED.value,
)


@dataclass(frozen=True, slots=True)
class Limits:
    """How far the agent may go without a person (from settings)."""

    auto_per_target: int = 2
    window_s: float = 600.0
    after_action_s: float = 60.0


@dataclass(frozen=True, slots=True)
class AlreadyUnderWay:
    """The same action with the same parameters is already running or being verified (for
    another ticket of this system): proposing it again would only queue a duplicate."""

    action_id: int
    why: str


def ticket_label(ticket: TicketRow) -> str:
    return f"ticket #{ticket.id} ({ticket.invariant} on {ticket.target})"


class Proposer:
    """Turns one recommendation into a proposal the policy has decided about."""

    def __init__(
        self,
        catalog: ActionCatalog,
        *,
        actions: ActionRepository,
        controls: Controls,
        decisions: Decisions,
        tickets: TicketRepository,
        bus: EventBus,
        audit: Callable[[str, int, dict[str, Any]], None],
        run_id: str,
        actor: str,
        limits: Limits,
        system: str = "",
    ) -> None:
        self.catalog = catalog
        self.actions = actions
        self.controls = controls
        self.decisions = decisions
        self.tickets = tickets
        self.bus = bus
        self.audit = audit
        self.run_id = run_id
        self.actor = actor
        self.limits = limits
        self.system = system or run_id

    # ----------------------------------------------------------------- measuring the scope

    def after_action(self, ticket: TicketRow) -> ActionRow | None:
        """The agent's action on this ticket's target that ran while, or shortly before, the
        ticket's violation first showed: the agent may have caused it."""
        window = timedelta(seconds=self.limits.after_action_s)
        since = ticket.first_seen - window - timedelta(hours=1)
        for row in self.actions.touching([ticket.target], system=self.system, since=since):
            if row.ticket_id == ticket.id or row.state not in RAN:
                continue
            if not row.proposed_by.startswith("agent:"):
                continue
            started = row.decided_at or row.created_at
            ended = row.finished_at or utcnow()
            if started <= ticket.first_seen <= ended + window:
                return row
        return None

    def scope(
        self,
        ticket: TicketRow,
        targets: list[str],
        diagnosis: Diagnosis | None,
        investigation: Investigation | None,
    ) -> Scope:
        label = ticket_label(ticket)
        outside: list[str] = []
        if diagnosis is not None and investigation is not None:
            outside = investigation.not_implicated(targets, ticket.target, diagnosis)
        elif diagnosis is None:
            outside = [t for t in targets if t != ticket.target]
        not_implicated = tuple(f"{t} is not implicated by {label}" for t in outside)
        after = None
        if ticket.after_action_id is not None:
            after = (
                f"{label} opened after the agent's action #{ticket.after_action_id} on "
                f"{ticket.target}: a person decides what happens next"
            )
        since = utcnow() - timedelta(seconds=self.limits.window_s)
        recent = self.actions.touching(targets, system=self.system, since=since) if targets else []
        busy: list[str] = []
        for row in recent:
            if row.state not in IN_FLIGHT:
                continue
            spec_verifies = (
                row.name not in self.catalog.names() or self.catalog.get(row.name).verify
            )
            if row.state == ActionState.SUCCEEDED.value and not spec_verifies:
                continue
            busy.append(
                f"action #{row.id} ({row.name} on {', '.join(row.targets)}) is still {row.state}"
            )
        over: list[str] = []
        for target in targets:
            automatic = [
                r
                for r in recent
                if target in (r.targets or []) and r.decided_by == "policy" and r.state in RAN
            ]
            if len(automatic) >= self.limits.auto_per_target:
                over.append(
                    f"{target} already had {len(automatic)} automatic action(s) in the last "
                    f"{self.limits.window_s:g} s (at most {self.limits.auto_per_target})"
                )
        return Scope(not_implicated, after, tuple(busy), tuple(over))

    def under_way(self, name: str, params: dict[str, Any], targets: list[str]) -> ActionRow | None:
        """An action identical to this one (name and parameters) on this system that has not
        finished proving itself yet."""
        if not targets:
            return None
        since = utcnow() - timedelta(seconds=self.limits.window_s)
        for row in self.actions.touching(targets, system=self.system, since=since):
            if row.state in IN_FLIGHT and row.name == name and row.params == params:
                return row
        return None

    # ------------------------------------------------------------------------- proposing

    async def propose(
        self,
        ticket: TicketRow,
        name: str,
        params: dict[str, Any],
        reason: str,
        *,
        diagnosis: Diagnosis | None = None,
        investigation: Investigation | None = None,
    ) -> bool | str | AlreadyUnderWay:
        """Record a proposal with the policy's decision: True when it may run, False when the
        mode records it only, the refusal's reason when it is not acceptable here, and what is
        already doing it when the same action is under way."""
        assert ticket.id is not None
        try:
            # A chain is planned step by step: each step must be one of the catalog's own
            # actions with valid parameters; the brain cannot invent one.
            plan = self.catalog.plan(name, params)
        except ActionInputError as exc:
            self.bus.publish(ActionInvalid(ticket_id=ticket.id, action=name, error=str(exc)))
            self.audit("action_invalid", ticket.id, {"action": name, "error": str(exc)})
            return f"{name} was recommended but cannot be proposed: {exc}"
        spec = plan.spec
        valid = plan.params_json()
        targets = plan.targets()
        steps = plan.describe_steps()
        running = await asyncio.to_thread(self.under_way, name, valid, targets)
        if running is not None and running.id is not None:
            for_ticket = f" for ticket #{running.ticket_id}" if running.ticket_id else ""
            return AlreadyUnderWay(
                running.id,
                f"action #{running.id} ({running.name} on {', '.join(running.targets)}"
                f"{for_ticket}) already does this and is {running.state}: the ticket waits "
                "for its outcome",
            )
        mode = await asyncio.to_thread(self.controls.mode)
        kill = await asyncio.to_thread(self.controls.kill_switch)
        scope = await asyncio.to_thread(self.scope, ticket, targets, diagnosis, investigation)
        policy = decide(plan.risk, mode, kill_switch=kill, scope=scope)
        row = await asyncio.to_thread(
            self.actions.propose,
            spec,
            valid,
            risk=plan.risk,
            steps=steps or None,
            proposed_by=self.actor,
            reason=reason,
            run_id=self.run_id,
            ticket_id=ticket.id,
            restores=ticket.dedup_key,
            targets=targets,
            decision=policy.decision.value,
            policy_reason=policy.why,
            system=self.system,
        )
        self.audit(
            "policy_decision",
            ticket.id,
            {
                "action_id": row.id,
                "decision": policy.decision.value,
                "why": policy.why,
                "mode": mode.value,
                "risk": plan.risk,
                "targets": targets,
            },
        )
        self.bus.publish(
            action_event(
                ActionProposed,
                row,
                reason=reason,
                decision=policy.decision.value,
                why=policy.why,
                mode=mode.value,
                expires_at=row.expires_at.isoformat() if row.expires_at else None,
                targets=targets,
                steps=steps,
            )
        )
        if policy.decision is Decision.EXECUTE:
            try:
                await asyncio.to_thread(
                    self.decisions.approve,
                    row.id,  # type: ignore[arg-type]
                    by="policy",
                    reason=policy.why,
                )
            except ApprovalError as exc:
                log.warning("policy approval refused: %s", exc)
            return True
        if policy.decision is Decision.AWAIT_APPROVAL:
            pending = await asyncio.to_thread(
                self.tickets.set_state, ticket.id, TicketState.ACTION_PENDING
            )
            self.bus.publish(TicketUpdated(**pending.event_fields(), reason=policy.why))
            return True
        return False  # observe mode: a proposal on record, nothing will run
