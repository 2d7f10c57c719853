"""The policy gate: what the mode and the kill switch allow for an action of a given risk."""

from __future__ import annotations

from enum import StrEnum

from operator_console.actions.catalog import Risk
from operator_console.actions.store import Mode


class Decision(StrEnum):
    EXECUTE = "execute"  # approved by policy, runs now
    AWAIT_APPROVAL = "await_approval"  # a person decides
    PROPOSE_ONLY = "propose_only"  # observe mode or kill switch: recorded, never run


AUTO_RISKS: frozenset[str] = frozenset({"low", "medium"})


def decide(risk: Risk, mode: Mode, *, kill_switch: bool) -> Decision:
    """Nothing a model says reaches this function except the action's declared risk."""
    if kill_switch or mode is Mode.OBSERVE:
        return Decision.PROPOSE_ONLY
    if mode is Mode.AUTO and risk in AUTO_RISKS:
        return Decision.EXECUTE
    return Decision.AWAIT_APPROVAL
