"""What every brain shares: tools, transcript steps, budgets and the structured diagnosis."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

from operator_console.domain import utcnow

# Tool output is capped before it reaches a model or the database; the full size is noted.
TOOL_OUTPUT_CAP = 4000


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
class ToolSpec:
    name: str
    description: str
    input_schema: dict[str, Any]

    def to_anthropic(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "input_schema": self.input_schema,
        }


@dataclass(slots=True)
class ToolOutput:
    """What a tool returns: text for the model (JSON where structured), and an error flag."""

    content: str
    is_error: bool = False
    data: Any = None

    @classmethod
    def of(cls, data: Any, *, is_error: bool = False) -> ToolOutput:
        text = data if isinstance(data, str) else json.dumps(data, default=str, indent=1)
        return cls(content=text, is_error=is_error, data=data)

    def capped(self, cap: int = TOOL_OUTPUT_CAP) -> tuple[str, int | None]:
        """The content cut to `cap` characters, and the full size when it was cut."""
        if len(self.content) <= cap:
            return self.content, None
        note = f"\n[output truncated: {len(self.content)} characters, first {cap} shown]"
        return self.content[:cap] + note, len(self.content)


ToolHandler = Callable[[Mapping[str, Any]], Awaitable[ToolOutput]]


class Toolbox:
    """The tools one investigation may call; an unknown tool or bad input is an error result."""

    def __init__(self) -> None:
        self._specs: dict[str, ToolSpec] = {}
        self._handlers: dict[str, ToolHandler] = {}

    def add(self, spec: ToolSpec, handler: ToolHandler) -> None:
        self._specs[spec.name] = spec
        self._handlers[spec.name] = handler

    def specs(self) -> list[ToolSpec]:
        return list(self._specs.values())

    def names(self) -> list[str]:
        return list(self._specs)

    async def call(self, name: str, tool_input: Mapping[str, Any]) -> ToolOutput:
        handler = self._handlers.get(name)
        if handler is None:
            return ToolOutput(f"unknown tool {name!r}; tools: {', '.join(self._specs)}", True)
        if not isinstance(tool_input, Mapping):
            return ToolOutput(f"tool {name} takes a JSON object, got {type(tool_input)}", True)
        try:
            return await handler(tool_input)
        except (ValueError, KeyError, TypeError) as exc:
            return ToolOutput(f"tool {name} rejected its input: {exc}", True)


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


Risk = Literal["low", "medium", "high"]


class Diagnosis(BaseModel):
    """The structured result of an investigation, the same whichever brain produced it."""

    summary: str
    root_cause: str
    evidence: list[Evidence] = Field(default_factory=list)
    alternatives: list[Alternative] = Field(default_factory=list)
    confidence: float = Field(ge=0, le=1)
    recommended: list[RecommendedAction] = Field(default_factory=list)
    risk: Risk = "low"


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
    "Diagnosis",
    "Step",
    "StepKind",
    "TicketContext",
    "ToolOutput",
    "ToolSpec",
    "Toolbox",
    "Usage",
    "fence",
]
