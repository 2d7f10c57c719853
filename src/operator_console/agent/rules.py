"""The offline rules brain: runs the subject's runbook probes, ranks hypotheses by evidence."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from operator_console.agent.base import BrainResult, Step, StepKind, StepSink
from operator_console.contract import (
    Alternative,
    Diagnosis,
    Evidence,
    Hypothesis,
    Results,
    TicketContext,
    Toolbox,
)

Runbook = Callable[[str], Sequence[Hypothesis]]


class RulesBrain:
    """Deterministic: the same ticket and the same evidence give the same diagnosis."""

    name = "rules"

    def __init__(self, runbook: Runbook) -> None:
        self.runbook = runbook

    async def investigate(
        self, ticket: TicketContext, tools: Toolbox, on_step: StepSink
    ) -> BrainResult:
        steps: list[Step] = []

        def step(item: Step) -> None:
            steps.append(item)
            on_step(item)

        hypotheses = list(self.runbook(ticket.invariant))
        step(
            Step(
                StepKind.REASONING,
                text=(
                    f"Ticket #{ticket.ticket_id}: {ticket.invariant} on {ticket.target}. "
                    f"Runbook hypotheses: {', '.join(h.name for h in hypotheses) or 'none'}."
                ),
            )
        )
        results = Results()
        seen: set[str] = set()
        counter = 0
        for hypothesis in hypotheses:
            for probe in hypothesis.probes(ticket):
                if probe.key in seen:
                    continue
                seen.add(probe.key)
                counter += 1
                tool_use_id = f"rules_{ticket.ticket_id}_{counter}"
                step(
                    Step(
                        StepKind.TOOL_CALL,
                        tool=probe.tool,
                        tool_use_id=tool_use_id,
                        input=dict(probe.input),
                    )
                )
                output = await tools.call(probe.tool, probe.input)
                text, full = output.capped()
                step(
                    Step(
                        StepKind.TOOL_RESULT,
                        tool=probe.tool,
                        tool_use_id=tool_use_id,
                        text=text,
                        is_error=output.is_error,
                        full_size=full,
                    )
                )
                results.put(probe, output, tool_use_id)

        ranked = sorted(
            ((h, h.assess(ticket, results)) for h in hypotheses),
            key=lambda pair: pair[1].score,
            reverse=True,
        )
        best = ranked[0] if ranked and ranked[0][1].score > 0 else None
        refused = None
        if best is not None and best[1].action is not None:
            refused = ticket.was_refused(best[1].action.action, best[1].action.params)
            if refused is not None:
                # A person said no to this fix: a near alternative with another fix may stand.
                others = [
                    (h, a)
                    for h, a in ranked[1:]
                    if a.score >= 0.5 * best[1].score
                    and a.action is not None
                    and ticket.was_refused(a.action.action, a.action.params) is None
                ]
                if others:
                    best, refused = others[0], None
        alternatives = [
            Alternative(
                hypothesis=h.description,
                rejected_because=a.against or f"weaker evidence (score {a.score:.2f})",
            )
            for h, a in ranked
            if best is None or h is not best[0]
        ]
        if best is None:
            step(Step(StepKind.REASONING, text="No runbook hypothesis fits the evidence."))
            diagnosis = Diagnosis(
                summary=f"{ticket.invariant} on {ticket.target}: cause not identified",
                root_cause="no runbook hypothesis is supported by the evidence gathered",
                alternatives=alternatives,
                confidence=0.0,
            )
            return BrainResult(diagnosis=diagnosis, steps=steps)
        hypothesis, assessment = best
        total = sum(a.score for _, a in ranked) or 1.0
        evidence = [
            Evidence(claim=f.claim, tool_use_id=results.id_of(f.probe), excerpt=f.excerpt)
            for f in assessment.findings
        ]
        recommended = [assessment.action] if assessment.action else []
        blocked = assessment.blocked or None
        if refused is not None:
            recommended = []
            blocked = (
                f"the person {refused.outcome} {refused.action} {refused.params} "
                f"({refused.reason or 'no reason given'}) and no other runbook fix fits the "
                "evidence: the ticket is yours"
            )
        step(
            Step(
                StepKind.REASONING,
                text=(
                    f"Most supported: {hypothesis.description} "
                    f"({len(evidence)} findings). "
                    + (
                        f"Recommending {assessment.action.action} {assessment.action.params}."
                        if assessment.action
                        else f"No action recommended: {blocked}."
                        if blocked
                        else "No action recommended."
                    )
                ),
            )
        )
        diagnosis = Diagnosis(
            summary=f"{ticket.invariant} on {ticket.target}: {hypothesis.description}",
            root_cause=hypothesis.description,
            label=hypothesis.name,
            evidence=evidence,
            alternatives=alternatives,
            confidence=round(min(1.0, assessment.score / total), 2),
            recommended=recommended,
            risk=assessment.risk,
        )
        # The evidence points to a fix this console cannot do here: a person must act.
        return BrainResult(diagnosis=diagnosis, steps=steps, escalation=blocked)
