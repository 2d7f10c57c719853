"""Which targets an investigation implicates: the ticket's own, and those its evidence ties to a
tool result of this same investigation. The policy runs nothing automatically elsewhere."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from operator_console.agent.base import Step, StepKind
from operator_console.contract import Diagnosis


def names(text: str, target: str) -> bool:
    """Whether `text` names `target` as a whole word (node-1 is not node-10)."""
    return re.search(rf"(?<![\w-]){re.escape(target)}(?![\w-])", text) is not None


@dataclass(frozen=True, slots=True)
class Investigation:
    """What one investigation's tools were asked and answered, by tool_use_id."""

    seen: dict[str, str]  # tool_use_id -> the call's input and the result's text

    @classmethod
    def of(cls, steps: Sequence[Step]) -> Investigation:
        seen: dict[str, str] = {}
        for step in steps:
            if step.tool_use_id is None or step.kind not in (
                StepKind.TOOL_CALL,
                StepKind.TOOL_RESULT,
            ):
                continue
            part = json.dumps(step.input or {}) if step.kind is StepKind.TOOL_CALL else step.text
            seen[step.tool_use_id] = seen.get(step.tool_use_id, "") + "\n" + part
        return cls(seen)

    def implicates(self, target: str, diagnosis: Diagnosis) -> bool:
        """An evidence item names the target and cites a tool result of this investigation
        that names it too."""
        for item in diagnosis.evidence:
            shown = self.seen.get(item.tool_use_id)
            if shown is None:
                continue
            if (names(item.claim, target) or names(item.excerpt, target)) and names(shown, target):
                return True
        return False

    def not_implicated(
        self, targets: Iterable[str], ticket_target: str, diagnosis: Diagnosis
    ) -> list[str]:
        return [t for t in targets if t != ticket_target and not self.implicates(t, diagnosis)]
