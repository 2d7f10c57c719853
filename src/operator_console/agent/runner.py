"""The agent loop: takes each new ticket, has the brain investigate, turns the diagnosis into
proposals and lets the policy decide what happens to them. It never executes anything itself."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Mapping
from typing import Any

from operator_console.actions.decisions import Decisions, action_event
from operator_console.actions.policy import Decision, decide
from operator_console.actions.shell import SHELL_ACTION
from operator_console.actions.store import ActionRepository, ApprovalError, Controls
from operator_console.agent.base import Brain, Step
from operator_console.audit import AuditLog
from operator_console.contract import (
    ActionCatalog,
    ActionInputError,
    AgentKit,
    TicketContext,
    ToolOutput,
    ToolSpec,
)
from operator_console.db.models import TicketRow, TranscriptRow
from operator_console.db.tickets import TicketRepository, TranscriptRepository
from operator_console.domain import TicketState
from operator_console.domain.bus import EventBus
from operator_console.domain.events import (
    ActionInvalid,
    ActionProposed,
    AgentStarted,
    AgentStep,
    DiagnosisReady,
    TicketEscalated,
    TicketOpened,
    TicketUpdated,
)

log = logging.getLogger(__name__)

STEP_TEXT_ON_BUS = 2000

SHELL_TOOL = ToolSpec(
    "shell",
    "Ask to run a shell command in the run's folder (clean environment, timeout, output "
    "capped). Each call is a high-risk action that waits for a person's approval; its "
    "output is not returned to you.",
    {
        "type": "object",
        "properties": {
            "command": {"type": "string", "description": "a /bin/sh command line"},
            "why": {"type": "string", "description": "what the command would show"},
        },
        "required": ["command"],
    },
)


class AgentLoop:
    def __init__(
        self,
        brain: Brain,
        kit: AgentKit,
        *,
        tickets: TicketRepository,
        transcript: TranscriptRepository,
        actions: ActionRepository,
        controls: Controls,
        decisions: Decisions,
        bus: EventBus,
        run_id: str,
        audit: AuditLog,
        catalog: ActionCatalog | None = None,
    ) -> None:
        self.audit = audit
        self.brain = brain
        self.kit = kit
        self.catalog = catalog or kit.actions
        self.tickets = tickets
        self.transcript = transcript
        self.actions = actions
        self.controls = controls
        self.decisions = decisions
        self.bus = bus
        self.run_id = run_id
        self.actor = f"agent:{brain.name}"

    async def run(self) -> None:
        """Investigate tickets one at a time, in the order they opened, until cancelled."""
        async with self.bus.subscribe() as queue:
            for ticket in await asyncio.to_thread(self.tickets.unresolved, self.run_id):
                await self._guarded(ticket.id)
            while True:
                event = await queue.get()
                if isinstance(event, TicketOpened):
                    await self._guarded(event.ticket_id)

    async def close(self) -> None:
        """Release what the brain holds (an HTTP client)."""
        close = getattr(self.brain, "aclose", None)
        if close is not None:
            await close()

    async def _guarded(self, ticket_id: Any) -> None:
        if not isinstance(ticket_id, int):
            return
        try:
            await self.handle(ticket_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("investigation of ticket %s failed", ticket_id)
            ticket = await asyncio.to_thread(
                self.tickets.escalate, ticket_id, f"the agent failed: {type(exc).__name__}: {exc}"
            )
            self.bus.publish(
                TicketEscalated(**ticket.event_fields(), reason=ticket.escalation_reason or "")
            )

    async def handle(self, ticket_id: int) -> None:
        if await asyncio.to_thread(self.controls.kill_switch):
            return
        if not await asyncio.to_thread(self.tickets.hold, ticket_id, by=self.brain.name):
            return
        ticket = await asyncio.to_thread(self.tickets.get, ticket_id)
        assert ticket is not None
        self.bus.publish(
            AgentStarted(
                ticket_id=ticket_id,
                brain=self.brain.name,
                invariant=ticket.invariant,
                target=ticket.target,
            )
        )
        seq = 0

        def on_step(step: Step) -> None:
            nonlocal seq
            seq += 1
            self.transcript.append(
                TranscriptRow(
                    ticket_id=ticket_id,
                    seq=seq,
                    brain=self.brain.name,
                    kind=step.kind.value,
                    text=step.text,
                    tool=step.tool,
                    tool_use_id=step.tool_use_id,
                    input=step.input,
                    is_error=step.is_error,
                    full_size=step.full_size,
                    at=step.at,
                )
            )
            self._audit("agent_step", ticket_id, step.to_dict())
            self.bus.publish(
                AgentStep(
                    ticket_id=ticket_id,
                    brain=self.brain.name,
                    seq=seq,
                    kind=step.kind.value,
                    text=step.text[:STEP_TEXT_ON_BUS],
                    tool=step.tool,
                    tool_use_id=step.tool_use_id,
                    input=step.input,
                    is_error=step.is_error,
                )
            )

        context = TicketContext(
            ticket_id=ticket_id,
            subject=ticket.subject,
            invariant=ticket.invariant,
            target=ticket.target,
            severity=ticket.severity,
            message=ticket.message,
            details=ticket.details,
            runbook=self.kit.runbook,
            subject_context=self.kit.context,
        )
        toolbox = self.kit.toolbox()
        if SHELL_ACTION in self.catalog.names():
            toolbox.add(SHELL_TOOL, functools.partial(self._shell, ticket))
        result = await self.brain.investigate(context, toolbox, on_step)
        usage = {
            "input_tokens": result.usage.input_tokens,
            "output_tokens": result.usage.output_tokens,
            "cache_read_tokens": result.usage.cache_read_tokens,
            "estimated_cost_usd": round(result.usage.estimated_cost_usd, 6),
        }
        if result.diagnosis is None:
            reason = result.escalation or "the brain returned no diagnosis"
            self._audit("agent_escalated", ticket_id, {"reason": reason, "usage": usage})
            escalated = await asyncio.to_thread(self.tickets.escalate, ticket_id, reason)
            self.bus.publish(
                TicketEscalated(**escalated.event_fields(), reason=reason, usage=usage)
            )
            return
        diagnosis = result.diagnosis.model_dump()
        await asyncio.to_thread(self.tickets.set_diagnosis, ticket_id, diagnosis)
        self._audit("diagnosis_ready", ticket_id, {**diagnosis, "usage": usage})
        self.bus.publish(
            DiagnosisReady(
                ticket_id=ticket_id,
                brain=self.brain.name,
                summary=result.diagnosis.summary,
                root_cause=result.diagnosis.root_cause,
                confidence=result.diagnosis.confidence,
                evidence=[e.model_dump() for e in result.diagnosis.evidence],
                alternatives=[a.model_dump() for a in result.diagnosis.alternatives],
                recommended=[r.model_dump() for r in result.diagnosis.recommended],
                usage=usage,
            )
        )
        proposed = 0
        refused: list[str] = []
        for recommendation in result.diagnosis.recommended:
            outcome = await self._propose(
                ticket,
                recommendation.action,
                recommendation.params,
                recommendation.reason or result.diagnosis.root_cause,
            )
            if outcome is True:
                proposed += 1
            elif isinstance(outcome, str):
                refused.append(outcome)
        if proposed:
            return
        reason = result.escalation or "; ".join(refused)
        if reason:
            # The fix the evidence points to cannot be proposed here: a person must act.
            escalated = await asyncio.to_thread(self.tickets.escalate, ticket_id, reason)
            self.bus.publish(TicketEscalated(**escalated.event_fields(), reason=reason))
        else:
            # Nothing to do: the monitor keeps watching and may auto-resolve it.
            await asyncio.to_thread(self.tickets.release, ticket_id)

    async def _shell(self, ticket: TicketRow, tool_input: Mapping[str, Any]) -> ToolOutput:
        """The shell tool: each call becomes a run_shell action the policy gates."""
        command = str(tool_input.get("command") or "").strip()
        why = str(tool_input.get("why") or "").strip() or "the agent asked to run a command"
        if not command:
            return ToolOutput("shell needs a non-empty command", is_error=True)
        proposed = await self._propose(ticket, SHELL_ACTION, {"command": command}, why)
        if proposed is not True:
            return ToolOutput(
                "not run: the command is on record as a proposal, but the mode lets nothing "
                "run or it was not acceptable",
                is_error=True,
            )
        return ToolOutput(
            "proposed as a run_shell action. It is high risk: it runs only after a person "
            "approves it, and its output goes to that action's result, not to this "
            "investigation. Do not wait for it; finish with the evidence you have."
        )

    async def _propose(
        self, ticket: TicketRow, name: str, params: dict[str, Any], reason: str
    ) -> bool | str:
        """Record a proposal with the policy's decision: True when it may run, False when the
        mode records it only, the refusal's reason when it is not acceptable here."""
        assert ticket.id is not None
        try:
            spec = self.catalog.get(name)
            valid = spec.validate(params).model_dump(mode="json")
        except ActionInputError as exc:
            self.bus.publish(ActionInvalid(ticket_id=ticket.id, action=name, error=str(exc)))
            self._audit("action_invalid", ticket.id, {"action": name, "error": str(exc)})
            return f"{name} was recommended but cannot be proposed: {exc}"
        mode = await asyncio.to_thread(self.controls.mode)
        kill = await asyncio.to_thread(self.controls.kill_switch)
        policy = decide(spec.risk, mode, kill_switch=kill)
        targets = spec.targets(valid)
        row = await asyncio.to_thread(
            self.actions.propose,
            spec,
            valid,
            proposed_by=self.actor,
            reason=reason,
            run_id=self.run_id,
            ticket_id=ticket.id,
            restores=ticket.dedup_key,
            targets=targets,
            decision=policy.decision.value,
            policy_reason=policy.why,
        )
        self._audit(
            "policy_decision",
            ticket.id,
            {
                "action_id": row.id,
                "decision": policy.decision.value,
                "why": policy.why,
                "mode": mode.value,
                "risk": spec.risk,
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
            self.bus.publish(TicketUpdated(**pending.event_fields()))
            return True
        return False  # observe mode: a proposal on record, nothing will run

    def _audit(self, kind: str, ticket_id: int, payload: dict[str, Any]) -> None:
        self.audit.append(
            kind, actor=self.actor, payload=payload, run_id=self.run_id, ticket_id=ticket_id
        )
