"""What every brain shares: transcript steps, budgets, usage and the brain protocol."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from operator_console.contract import Diagnosis, TicketContext, Toolbox
from operator_console.domain import utcnow


class StepKind(StrEnum):
    REASONING = "reasoning"
    TOOL_CALL = "tool_call"
    TOOL_RESULT = "tool_result"


@dataclass(slots=True)
class Step:
    """One entry of a brain's transcript, persisted as it happens."""

    kind: StepKind
    text: str = ""
    tool: str | None = None
    tool_use_id: str | None = None
    input: dict[str, Any] | None = None
    is_error: bool = False
    full_size: int | None = None  # size of a tool result before it was capped
    at: datetime = field(default_factory=utcnow)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "text": self.text,
            "tool": self.tool,
            "tool_use_id": self.tool_use_id,
            "input": self.input,
            "is_error": self.is_error,
            "full_size": self.full_size,
            "at": self.at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class Budget:
    max_turns: int = 8
    max_output_tokens_per_turn: int = 1024
    max_total_tokens: int = 60_000
    max_wall_s: float = 120.0


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    estimated_cost_usd: float = 0.0

    @property
    def total_tokens(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_tokens
            + (self.cache_write_tokens)
        )


@dataclass(slots=True)
class BrainResult:
    diagnosis: Diagnosis | None
    steps: list[Step]
    usage: Usage = field(default_factory=Usage)
    escalation: str | None = None  # why the brain gave up (budget, errors); None when it finished


StepSink = Callable[[Step], None]


class Brain(Protocol):
    """Investigates one ticket with the tools given and returns a structured diagnosis."""

    name: str

    async def investigate(
        self, ticket: TicketContext, tools: Toolbox, on_step: StepSink
    ) -> BrainResult: ...


def fence(label: str, data: Any) -> str:
    """Wrap subject data so a prompt treats it as data, never as instructions."""
    text = data if isinstance(data, str) else json.dumps(data, default=str, indent=1)
    text = text.replace("</data>", "<\\/data>")
    return f'<data source="{label}">\n{text}\n</data>'


__all__: Sequence[str] = [
    "Brain",
    "BrainResult",
    "Budget",
    "Step",
    "StepKind",
    "Usage",
    "fence",
]
