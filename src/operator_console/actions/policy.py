"""The policy gate: what the mode and the kill switch allow for an action of a given risk."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from operator_console.actions.store import Mode
from operator_console.contract import Risk


class Decision(StrEnum):
    EXECUTE = "execute"  # approved by policy, runs now
    AWAIT_APPROVAL = "await_approval"  # a person decides
    PROPOSE_ONLY = "propose_only"  # observe mode or kill switch: recorded, never run


AUTO_RISKS: frozenset[str] = frozenset({"low", "medium"})


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    """What happens to a proposal, and why, in words a person reads."""

    decision: Decision
    why: str


def decide(risk: Risk, mode: Mode, *, kill_switch: bool) -> PolicyDecision:
    """Nothing a model says reaches this function except the action's declared risk."""
    if kill_switch:
        return PolicyDecision(Decision.PROPOSE_ONLY, "the kill switch is on: nothing runs")
    if mode is Mode.OBSERVE:
        return PolicyDecision(Decision.PROPOSE_ONLY, "observe mode: proposals are only recorded")
    if mode is Mode.AUTO and risk in AUTO_RISKS:
        return PolicyDecision(Decision.EXECUTE, f"auto mode runs {risk}-risk actions")
    if mode is Mode.AUTO:
        return PolicyDecision(Decision.AWAIT_APPROVAL, f"{risk}-risk actions wait for a person")
    return PolicyDecision(Decision.AWAIT_APPROVAL, "approve mode: every action waits for a person")
