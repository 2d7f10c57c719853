"""A runbook as testable hypotheses: each names the tool calls (probes) it needs and judges their
results. The offline rules brain runs them; a subject writes them on the base class here."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from operator_console.contract.actions import ActionCatalog, Risk
from operator_console.contract.diagnosis import RecommendedAction, TicketContext
from operator_console.contract.tools import ToolOutput


@dataclass(frozen=True, slots=True)
class Probe:
    """One tool call a hypothesis needs to judge itself."""

    tool: str
    input: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.tool}:{sorted(self.input.items())}"


@dataclass(slots=True)
class Finding:
    claim: str
    probe: Probe
    excerpt: str = ""


@dataclass(slots=True)
class Assessment:
    """How well the gathered evidence supports a hypothesis (score 0 means not at all)."""

    score: float
    findings: list[Finding] = field(default_factory=list)
    against: str = ""  # why it does not hold, when it does not
    action: RecommendedAction | None = None
    risk: Risk = "low"
    blocked: str = ""  # the fix the evidence points to, and why it cannot be done here


class Results:
    """Probe results by probe, with the tool_use ids that produced them."""

    def __init__(self) -> None:
        self._data: dict[str, Any] = {}
        self._ids: dict[str, str] = {}
        self._errors: dict[str, str] = {}

    def put(self, probe: Probe, output: ToolOutput, tool_use_id: str) -> None:
        self._ids[probe.key] = tool_use_id
        if output.is_error:
            self._errors[probe.key] = output.content
        else:
            self._data[probe.key] = output.data

    def get(self, probe: Probe) -> Any:
        return self._data.get(probe.key)

    def error(self, probe: Probe) -> str | None:
        return self._errors.get(probe.key)

    def id_of(self, probe: Probe) -> str:
        return self._ids.get(probe.key, "")


class Hypothesis(Protocol):
    name: str
    description: str

    def probes(self, ticket: TicketContext) -> Sequence[Probe]: ...

    def assess(self, ticket: TicketContext, results: Results) -> Assessment: ...


def finding(claim: str, probe: Probe, **excerpt: Any) -> Finding:
    """A finding whose excerpt is the part of the tool result that shows the claim."""
    return Finding(claim, probe, json.dumps(excerpt, default=str) if excerpt else "")


def reject(against: str) -> Assessment:
    """The evidence rules the hypothesis out, for this reason."""
    return Assessment(score=0.0, against=against)


def explain(score: float, findings: list[Finding]) -> Assessment:
    """Supported by the evidence, but no action of this subject is the fix."""
    return Assessment(score=score, findings=findings)


class Verdict(Exception):
    """Raised by evidence readers when the hypothesis is decided before it is judged."""

    def __init__(self, assessment: Assessment) -> None:
        super().__init__(assessment.against)
        self.assessment = assessment


def need(results: Results, probe: Probe) -> dict[str, Any]:
    """The probe's result as a mapping, or a verdict that it gave no evidence."""
    data = results.get(probe)
    if not isinstance(data, dict):
        reason = (results.error(probe) or "no result")[:200]
        raise Verdict(reject(f"{probe.tool} gave no evidence: {reason}"))
    return data


class RunbookHypothesis:
    """Base of a subject's hypotheses: `judge` reads the evidence; `fix` names the action, whose
    risk comes from the catalog. An action the catalog cannot do here makes it an explanation."""

    name = ""
    description = ""
    default_probes: tuple[Probe, ...] = ()

    def __init__(self, catalog: ActionCatalog) -> None:
        self.catalog = catalog

    def probes(self, ticket: TicketContext) -> Sequence[Probe]:
        return list(self.default_probes)

    def assess(self, ticket: TicketContext, results: Results) -> Assessment:
        try:
            return self.judge(ticket, results)
        except Verdict as verdict:
            return verdict.assessment

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        raise NotImplementedError

    def fix(
        self, score: float, findings: list[Finding], action: str, params: dict[str, Any], why: str
    ) -> Assessment:
        if action not in self.catalog.names():
            why_not = self.catalog.unavailable.get(action, "the catalog has no such action")
            note = f"the fix would be {action} {json.dumps(params)}, not available here: {why_not}"
            return Assessment(score=score, findings=findings, blocked=note)
        risk = self.catalog.get(action).risk
        chosen = RecommendedAction(action=action, params=params, reason=why)
        return Assessment(score=score, findings=findings, action=chosen, risk=risk)
