"""The agent loop: takes each new ticket, has the brain investigate, turns the diagnosis into
proposals and lets the policy decide what happens to them. It never executes anything itself.

It comes back to a ticket when a person rejects its fix (with the person's reason, so it may
propose something else or hand the ticket to the person), when the cause a mitigation left
behind clears (to undo the mitigation), and when a ticket it found nothing to do about is still
violated a while later (the evidence may have changed; after a few such looks it hands the ticket
to a person).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Mapping
from typing import Any

from operator_console.actions.chain import CHAIN_ACTION
from operator_console.actions.decisions import Decisions
from operator_console.actions.shell import SHELL_ACTION
from operator_console.actions.store import ActionRepository, ActionState, Controls
from operator_console.agent.base import Brain, BrainResult, Step
from operator_console.agent.proposals import AlreadyUnderWay, Limits, Proposer
from operator_console.agent.scope import Investigation
from operator_console.audit import AuditLog
from operator_console.contract import (
    ActionCatalog,
    AgentKit,
    PastDecision,
    TicketContext,
    ToolOutput,
    ToolSpec,
)
from operator_console.db.models import TicketRow, TranscriptRow
from operator_console.db.tickets import TicketRepository, TranscriptRepository
from operator_console.domain import TicketState
from operator_console.domain.bus import EventBus
from operator_console.domain.events import (
    ActionRejected,
    AgentStarted,
    AgentStep,
    CauseCleared,
    DiagnosisReady,
    Event,
    TicketEscalated,
    TicketOpened,
    TicketResolved,
    TicketUpdated,
)

log = logging.getLogger(__name__)

STEP_TEXT_ON_BUS = 2000
# A ticket the agent found nothing to do about, and that the monitor still sees violated, is
# looked at again after this long, at most this many times; then a person is told.
REVISIT_AFTER_S = 10.0
REVISITS = 2
# What happened to an earlier proposal that a new investigation must know about.
PAST_OUTCOMES = (
    ActionState.REJECTED.value,
    ActionState.FAILED.value,
    ActionState.NOT_VERIFIED.value,
    ActionState.EXPIRED.value,
    ActionState.CANCELLED.value,
)

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
        limits: Limits | None = None,
        causes: dict[str, tuple[str, ...]] | None = None,
        system: str = "",
    ) -> None:
        self.audit = audit
        self.brain = brain
        self.kit = kit
        self.catalog = catalog or kit.actions
        self.tickets = tickets
        self.transcript = transcript
        self.actions = actions
        self.controls = controls
        self.bus = bus
        self.run_id = run_id
        self.actor = f"agent:{brain.name}"
        self.causes = causes or {}
        # ticket id -> (how many looks found nothing to do, when the last one ended)
        self._idle: dict[int, tuple[int, float]] = {}
        self.proposer = Proposer(
            self.catalog,
            actions=actions,
            controls=controls,
            decisions=decisions,
            tickets=tickets,
            bus=bus,
            audit=self._audit,
            run_id=run_id,
            actor=self.actor,
            limits=limits or Limits(),
            system=system,
        )

    async def run(self) -> None:
        """Work tickets one at a time, in the order they opened, until cancelled."""
        async with self.bus.subscribe() as queue:
            for ticket in await asyncio.to_thread(self.tickets.unresolved, self.run_id):
                await self._guarded(ticket.id)
            while True:
                await self._on(await queue.get())

    async def _on(self, event: Event) -> None:
        if isinstance(event, TicketOpened):
            await self._guarded(event.ticket_id)
        elif isinstance(event, ActionRejected) and event.ticket_id is not None:
            if (event.by or "").startswith("person"):
                await self._guarded(event.ticket_id, rejected=True)
        elif isinstance(event, CauseCleared):
            await self._guarded(event.ticket_id, undo=event)
        elif isinstance(event, TicketUpdated) and event.reason is None:
            await self._revisit(event)
        elif isinstance(event, TicketResolved | TicketEscalated):
            self._idle.pop(event.ticket_id, None)

    async def _revisit(self, event: TicketUpdated) -> None:
        """The monitor still sees a ticket the agent found nothing to do about: look again
        once its evidence had time to change, and hand it to a person after a few looks."""
        idle = self._idle.get(event.ticket_id)
        if idle is None or event.state != TicketState.OPEN.value:
            return
        looks, since = idle
        if time.monotonic() - since < REVISIT_AFTER_S:
            return
        if looks > REVISITS:
            del self._idle[event.ticket_id]
            await self._escalate(
                event.ticket_id,
                f"{event.invariant} on {event.target} is still violated after {looks} "
                "investigations found nothing to do: a person should look",
            )
            return
        await self._guarded(event.ticket_id)

    async def close(self) -> None:
        """Release what the brain holds (an HTTP client)."""
        close = getattr(self.brain, "aclose", None)
        if close is not None:
            await close()

    async def _guarded(
        self, ticket_id: Any, *, rejected: bool = False, undo: CauseCleared | None = None
    ) -> None:
        if not isinstance(ticket_id, int):
            return
        try:
            if undo is not None:
                await self.undo_mitigation(ticket_id, undo)
                return
            if rejected:
                released = await asyncio.to_thread(self.tickets.release, ticket_id)
                if released is None:
                    return
                self.bus.publish(
                    TicketUpdated(**released.event_fields(), reason="a person rejected the fix")
                )
            await self.handle(ticket_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("investigation of ticket %s failed", ticket_id)
            await self._escalate(ticket_id, f"the agent failed: {type(exc).__name__}: {exc}")

    async def _escalate(
        self, ticket_id: int, reason: str, usage: dict[str, Any] | None = None
    ) -> None:
        escalated = await asyncio.to_thread(self.tickets.escalate, ticket_id, reason)
        self.bus.publish(TicketEscalated(**escalated.event_fields(), reason=reason, usage=usage))

    def _history(self, ticket_id: int) -> tuple[PastDecision, ...]:
        rows = self.actions.find(ticket_id=ticket_id, states=list(PAST_OUTCOMES), limit=50)
        return tuple(
            PastDecision(
                action=row.name,
                params=dict(row.params),
                outcome=row.state,
                reason=row.decision_reason or row.error or row.result or "",
            )
            for row in reversed(rows)
        )

    def _cause_in_incident(self, ticket: TicketRow) -> TicketRow | None:
        """An earlier ticket of the same incident that this one is a consequence of."""
        if ticket.incident_id is None:
            return None
        causes = self.causes.get(ticket.invariant, ())
        for mate in self.tickets.incident(ticket.incident_id):
            if mate.id != ticket.id and mate.invariant in causes:
                return mate
        return None

    def _related(self, ticket: TicketRow) -> tuple[str, ...]:
        if ticket.incident_id is None:
            return ()
        return tuple(
            f"#{m.id} {m.invariant} on {m.target} ({m.state}): {m.message}"
            for m in self.tickets.incident(ticket.incident_id)
            if m.id != ticket.id
        )

    async def handle(self, ticket_id: int) -> None:
        if await asyncio.to_thread(self.controls.kill_switch):
            return
        opened = await asyncio.to_thread(self.tickets.get, ticket_id)
        if opened is None:
            return
        cause = await asyncio.to_thread(self._cause_in_incident, opened)
        if cause is not None:
            # One fault, one investigation: this symptom is worked at its cause's ticket.
            self.bus.publish(
                TicketUpdated(
                    **opened.event_fields(),
                    reason=f"part of incident #{opened.incident_id}: a consequence of "
                    f"{cause.invariant} on {cause.target} (#{cause.id}), worked there",
                )
            )
            return
        if not await asyncio.to_thread(self.tickets.hold, ticket_id, by=self.brain.name):
            return
        ticket = await asyncio.to_thread(self.tickets.get, ticket_id)
        assert ticket is not None
        self.bus.publish(TicketUpdated(**ticket.event_fields(), reason="the agent investigates"))
        if ticket.after_action_id is None:
            earlier = await asyncio.to_thread(self.proposer.after_action, ticket)
            if earlier is not None and earlier.id is not None:
                await asyncio.to_thread(self.tickets.mark_after_action, ticket_id, earlier.id)
                ticket.after_action_id = earlier.id
        history = await asyncio.to_thread(self._history, ticket_id)
        self.bus.publish(
            AgentStarted(
                ticket_id=ticket_id,
                brain=self.brain.name,
                invariant=ticket.invariant,
                target=ticket.target,
            )
        )
        result = await self._investigate(ticket, history)
        await self._conclude(ticket, result, history)

    async def _investigate(
        self, ticket: TicketRow, history: tuple[PastDecision, ...]
    ) -> BrainResult:
        assert ticket.id is not None
        ticket_id = ticket.id
        seq = len(await asyncio.to_thread(self.transcript.for_ticket, ticket_id))

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
            subject_context=self.kit.context + self._chain_note(),
            history=history,
            related=await asyncio.to_thread(self._related, ticket),
            labels=tuple((h.name, h.description) for h in self.kit.hypotheses(ticket.invariant)),
        )
        toolbox = self.kit.toolbox()
        if SHELL_ACTION in self.catalog.names():
            toolbox.add(SHELL_TOOL, functools.partial(self._shell, ticket))
        return await self.brain.investigate(context, toolbox, on_step)

    def _chain_note(self) -> str:
        """How to recommend several of the catalog's actions as one chain, when it may."""
        if CHAIN_ACTION not in self.catalog.names():
            return ""
        return (
            "\n\nChains: to run several of the actions above in order under one approval, "
            f'recommend the action "{CHAIN_ACTION}" with params {{"steps": [{{"action": NAME, '
            '"params": {...}}, ...]}} (2 to 10 steps, each a listed action, never a chain). A '
            "failing step stops the chain and earlier steps with an undo are undone; it is "
            "judged by its riskiest step and every target its steps touch."
        )

    async def _conclude(
        self, ticket: TicketRow, result: BrainResult, history: tuple[PastDecision, ...]
    ) -> None:
        assert ticket.id is not None
        ticket_id = ticket.id
        looked = self._idle.pop(ticket_id, (0, 0.0))[0]
        usage = {
            "input_tokens": result.usage.input_tokens,
            "output_tokens": result.usage.output_tokens,
            "cache_read_tokens": result.usage.cache_read_tokens,
            "estimated_cost_usd": round(result.usage.estimated_cost_usd, 6),
        }
        if result.diagnosis is None:
            reason = result.escalation or "the brain returned no diagnosis"
            self._audit("agent_escalated", ticket_id, {"reason": reason, "usage": usage})
            await self._escalate(ticket_id, reason, usage)
            return
        diagnosis = result.diagnosis
        await asyncio.to_thread(self.tickets.set_diagnosis, ticket_id, diagnosis.model_dump())
        self._audit("diagnosis_ready", ticket_id, {**diagnosis.model_dump(), "usage": usage})
        self.bus.publish(
            DiagnosisReady(
                ticket_id=ticket_id,
                brain=self.brain.name,
                summary=diagnosis.summary,
                root_cause=diagnosis.root_cause,
                label=diagnosis.label,
                confidence=diagnosis.confidence,
                evidence=[e.model_dump() for e in diagnosis.evidence],
                alternatives=[a.model_dump() for a in diagnosis.alternatives],
                recommended=[r.model_dump() for r in diagnosis.recommended],
                usage=usage,
            )
        )
        investigation = Investigation.of(result.steps)
        proposed = 0
        refused: list[str] = []
        covered: list[str] = []
        for recommendation in diagnosis.recommended:
            past = next(
                (
                    p
                    for p in history
                    if p.action == recommendation.action and p.params == recommendation.params
                ),
                None,
            )
            if past is not None and past.outcome == ActionState.REJECTED.value:
                refused.append(
                    f"the person rejected {past.action} {past.params} "
                    f"({past.reason or 'no reason'}) and the brain has nothing else to propose"
                )
                continue
            outcome = await self.proposer.propose(
                ticket,
                recommendation.action,
                recommendation.params,
                recommendation.reason or diagnosis.root_cause,
                diagnosis=diagnosis,
                investigation=investigation,
            )
            if outcome is True:
                proposed += 1
            elif isinstance(outcome, AlreadyUnderWay):
                covered.append(outcome.why)
            elif isinstance(outcome, str):
                refused.append(outcome)
        if proposed:
            return
        if covered:
            # Another ticket's action is doing exactly this: the monitor resolves this one when
            # its violation clears (and escalates it if it does not).
            released = await asyncio.to_thread(self.tickets.release, ticket_id)
            if released is not None:
                self.bus.publish(TicketUpdated(**released.event_fields(), reason=covered[0]))
            return
        rejected = [p for p in history if p.outcome == ActionState.REJECTED.value]
        reason = result.escalation or "; ".join(refused)
        if not reason and rejected:
            last = rejected[-1]
            reason = (
                f"the person rejected {last.action} ({last.reason or 'no reason given'}); "
                "the agent has no other fix to propose, so the ticket is yours"
            )
        if reason:
            # The fix the evidence points to cannot be proposed here: a person must act.
            await self._escalate(ticket_id, reason)
        else:
            # Nothing to do: the monitor keeps watching and may auto-resolve it; while it stays
            # violated, the agent looks again (see _revisit).
            self._idle[ticket_id] = (looked + 1, time.monotonic())
            released = await asyncio.to_thread(self.tickets.release, ticket_id)
            if released is not None:
                self.bus.publish(TicketUpdated(**released.event_fields(), reason="no action"))

    async def undo_mitigation(self, ticket_id: int, cleared: CauseCleared) -> None:
        """The cause is gone: propose taking the mitigation back (its declared undo)."""
        ticket = await asyncio.to_thread(self.tickets.get, ticket_id)
        if ticket is None or ticket.mitigation_action_id is None:
            return
        mitigation = await asyncio.to_thread(self.actions.get, ticket.mitigation_action_id)
        if mitigation is None or mitigation.name not in self.catalog.names():
            return
        spec = self.catalog.get(mitigation.name)
        if spec.undo is None or spec.undo not in self.catalog.names():
            # Nothing to take back (leadership moved stays where it is): the cause is gone, so
            # the ticket is resolved.
            resolved = await asyncio.to_thread(self.tickets.resolve_by_agent, ticket_id)
            if resolved is not None:
                self.bus.publish(
                    TicketResolved(**resolved.event_fields(), by="agent", action_id=mitigation.id)
                )
            return
        undo = self.catalog.get(spec.undo)
        params = {k: v for k, v in mitigation.params.items() if k in undo.params.model_fields}
        await self.proposer.propose(
            ticket,
            undo.name,
            params,
            f"the cause is gone ({cleared.detail}): undo {mitigation.name} {mitigation.params}",
        )

    async def _shell(self, ticket: TicketRow, tool_input: Mapping[str, Any]) -> ToolOutput:
        """The shell tool: each call becomes a run_shell action the policy gates."""
        command = str(tool_input.get("command") or "").strip()
        why = str(tool_input.get("why") or "").strip() or "the agent asked to run a command"
        if not command:
            return ToolOutput("shell needs a non-empty command", is_error=True)
        proposed = await self.proposer.propose(ticket, SHELL_ACTION, {"command": command}, why)
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

    def _audit(self, kind: str, ticket_id: int, payload: dict[str, Any]) -> None:
        self.audit.append(
            kind, actor=self.actor, payload=payload, run_id=self.run_id, ticket_id=ticket_id
        )
