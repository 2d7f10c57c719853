"""The policy gate: what the mode, the kill switch, the action's risk and its scope allow.

Nothing a model says reaches this module except through what the agent measured: the action's
declared risk and targets, which of those targets the incident implicates, and what the agent
did to them lately.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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


@dataclass(frozen=True, slots=True)
class Scope:
    """Why a proposal may not run without a person, whatever its risk and the mode: each entry
    is one reason in words (empty: nothing holds it back)."""

    not_implicated: tuple[str, ...] = ()  # "node-1 is not implicated by ticket #1 (...)"
    after_action: str | None = None  # "ticket #4 opened 12 s after action #3 ..."
    busy: tuple[str, ...] = ()  # "action #3 restart_node on node-2 is still executing"
    over_budget: tuple[str, ...] = ()  # "node-2 had 2 automatic actions in the last 600 s"
    reasons: tuple[str, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        reasons = [*self.not_implicated]
        if self.after_action:
            reasons.append(self.after_action)
        reasons += [*self.busy, *self.over_budget]
        object.__setattr__(self, "reasons", tuple(reasons))


def decide(
    risk: Risk, mode: Mode, *, kill_switch: bool, scope: Scope | None = None
) -> PolicyDecision:
    """The kill switch wins, then observe mode; then anything in the scope makes a person
    decide in every mode; only then does auto mode run low and medium risk."""
    if kill_switch:
        return PolicyDecision(Decision.PROPOSE_ONLY, "the kill switch is on: nothing runs")
    if mode is Mode.OBSERVE:
        return PolicyDecision(Decision.PROPOSE_ONLY, "observe mode: proposals are only recorded")
    if scope is not None and scope.reasons:
        return PolicyDecision(Decision.AWAIT_APPROVAL, "; ".join(scope.reasons))
    if mode is Mode.AUTO and risk in AUTO_RISKS:
        return PolicyDecision(Decision.EXECUTE, f"auto mode runs {risk}-risk actions")
    if mode is Mode.AUTO:
        return PolicyDecision(Decision.AWAIT_APPROVAL, f"{risk}-risk actions wait for a person")
    return PolicyDecision(Decision.AWAIT_APPROVAL, "approve mode: every action waits for a person")
