"""The read-only tools an investigation may call, as a subject declares them."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

# Tool output is capped before it reaches a model or the database; the full size is noted.
TOOL_OUTPUT_CAP = 4000


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
    """The tools one investigation may call; an unknown tool or bad input is an error result.

    A handler that raises one of `unavailable` (the system could not be read) gives the
    investigation an error result naming the tool, never a crash."""

    def __init__(self, unavailable: tuple[type[BaseException], ...] = (RuntimeError, OSError)):
        self._specs: dict[str, ToolSpec] = {}
        self._handlers: dict[str, ToolHandler] = {}
        self._unavailable = unavailable

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
        except self._unavailable as exc:
            reason = f"{type(exc).__name__}: {exc}"
            return ToolOutput(f"tool {name} could not read the system: {reason}", True)


def only_fields(tool_input: Mapping[str, Any], *allowed: str) -> None:
    """Reject input fields a tool does not take (a model's typo is an error, not ignored)."""
    extra = sorted(set(tool_input) - set(allowed))
    if extra:
        raise ValueError(f"unexpected field(s) {', '.join(extra)}")
