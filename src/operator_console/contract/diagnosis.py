"""What an investigation is about and what it concludes, the same whichever brain ran it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

from operator_console.contract.actions import Risk


class Evidence(BaseModel):
    claim: str
    tool_use_id: str = Field(description="id of the tool result that shows it")
    excerpt: str = ""


class Alternative(BaseModel):
    hypothesis: str
    rejected_because: str


class RecommendedAction(BaseModel):
    action: str
    params: dict[str, Any] = Field(default_factory=dict)
    reason: str = ""


class Diagnosis(BaseModel):
    """The structured result of an investigation, the same whichever brain produced it."""

    summary: str
    root_cause: str
    label: str = Field(
        default="",
        description="the root cause's stable label: the runbook hypothesis's name (e.g. "
        "process_died), or empty when none fits",
    )
    evidence: list[Evidence] = Field(default_factory=list)
    alternatives: list[Alternative] = Field(default_factory=list)
    confidence: float = Field(ge=0, le=1)
    recommended: list[RecommendedAction] = Field(default_factory=list)
    risk: Risk = "low"


@dataclass(frozen=True, slots=True)
class PastDecision:
    """An action proposed earlier for this ticket and what a person (or the policy) said."""

    action: str
    params: dict[str, Any]
    outcome: str  # rejected, failed, not_verified, expired, cancelled
    reason: str


@dataclass(frozen=True, slots=True)
class TicketContext:
    """What a brain is told about the ticket it investigates (subject data is untrusted)."""

    ticket_id: int
    subject: str
    invariant: str
    target: str
    severity: str
    message: str
    details: dict[str, Any]
    runbook: str
    subject_context: str
    history: tuple[PastDecision, ...] = field(default_factory=tuple)
    # The other tickets of its incident (one fault's other symptoms), one line each.
    related: tuple[str, ...] = field(default_factory=tuple)
    # The runbook's causes for this invariant: (label, description), for the diagnosis' label.
    labels: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    def was_refused(self, action: str, params: dict[str, Any]) -> PastDecision | None:
        """The earlier decision against exactly this action, if there was one."""
        for past in self.history:
            if past.action == action and past.params == params:
                return past
        return None
