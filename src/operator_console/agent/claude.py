"""The Claude brain: a tool-use loop over the Messages API, every step persisted and budgeted."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import anthropic
from pydantic import ValidationError

from operator_console.agent.base import BrainResult, Budget, Step, StepKind, StepSink, Usage
from operator_console.agent.prompts import (
    NUDGE_TO_SUBMIT,
    SUBMIT_DIAGNOSIS,
    SYSTEM_PROMPT,
    describe_validation_error,
    submit_diagnosis_tool,
    user_message,
)
from operator_console.contract import Diagnosis, TicketContext, Toolbox, ToolOutput

log = logging.getLogger(__name__)

_EPHEMERAL = {"type": "ephemeral"}
# Cache reads and writes are billed relative to the input price.
_CACHE_READ_FACTOR = 0.10
_CACHE_WRITE_FACTOR = 1.25
_PREVIEW = 200
DEFAULT_BUDGET = Budget()  # frozen, so one shared default is safe


class ClaudeBrain:
    """Investigates a ticket with Claude, enforcing turn, token and wall-time budgets."""

    name = "claude"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        model: str = "claude-sonnet-5",
        budget: Budget = DEFAULT_BUDGET,
        max_retries: int = 4,
        timeout_s: float = 60.0,
        price_per_mtok: tuple[float, float] = (3.0, 15.0),
        client: anthropic.AsyncAnthropic | None = None,
    ) -> None:
        self.model = model
        self.budget = budget
        self.timeout_s = timeout_s
        self.price_per_mtok = price_per_mtok
        self._owns_client = client is None
        if client is None:
            # The SDK does the retrying (429, 5xx, 529; honours retry-after) and reads
            # ANTHROPIC_API_KEY / ANTHROPIC_BASE_URL when these are None.
            client = anthropic.AsyncAnthropic(
                api_key=api_key, base_url=base_url, max_retries=max_retries, timeout=timeout_s
            )
        self._client = client

    async def aclose(self) -> None:
        """Close the HTTP client when this brain created it."""
        if self._owns_client:
            await self._client.close()

    async def investigate(
        self, ticket: TicketContext, tools: Toolbox, on_step: StepSink
    ) -> BrainResult:
        return await _Investigation(self, ticket, tools, on_step).run()

    def _has_credentials(self) -> bool:
        client = self._client
        return any(
            getattr(client, attr, None) is not None
            for attr in ("api_key", "auth_token", "credentials")
        )

    def _secrets(self) -> list[str]:
        return [
            value
            for attr in ("api_key", "auth_token")
            if isinstance(value := getattr(self._client, attr, None), str) and value
        ]

    def cost(self, usage: Usage) -> float:
        """Estimated cost in USD from the per-million-token prices."""
        price_in, price_out = self.price_per_mtok
        return (
            usage.input_tokens * price_in
            + usage.output_tokens * price_out
            + usage.cache_read_tokens * price_in * _CACHE_READ_FACTOR
            + usage.cache_write_tokens * price_in * _CACHE_WRITE_FACTOR
        ) / 1_000_000


class _Investigation:
    """The state of one investigation: conversation, transcript, usage and turn count."""

    def __init__(
        self, brain: ClaudeBrain, ticket: TicketContext, tools: Toolbox, on_step: StepSink
    ) -> None:
        self.brain = brain
        self.budget = brain.budget
        self.ticket = ticket
        self.tools = tools
        self.on_step = on_step
        self.steps: list[Step] = []
        self.usage = Usage()
        self.turns = 0
        self.messages: list[dict[str, Any]] = []
        self.tool_use_ids: set[str] = set()
        self.started = time.monotonic()
        self.system = [{"type": "text", "text": SYSTEM_PROMPT, "cache_control": _EPHEMERAL}]
        specs = [spec.to_anthropic() for spec in tools.specs() if spec.name != SUBMIT_DIAGNOSIS]
        self.tool_params = [*specs, {**submit_diagnosis_tool(), "cache_control": _EPHEMERAL}]

    async def run(self) -> BrainResult:
        if not self.brain._has_credentials():
            return self._give_up(
                "no Anthropic API key: set ANTHROPIC_API_KEY (or use the offline rules brain)"
            )
        deadline = asyncio.timeout(self.budget.max_wall_s)
        try:
            async with deadline:
                return await self._loop()
        except TimeoutError:
            if not deadline.expired():
                raise
            return self._give_up(
                f"budget exhausted: wall time ({time.monotonic() - self.started:.1f} s of "
                f"{self.budget.max_wall_s:g} s) after {_turns(self.turns)} without a diagnosis"
            )
        except anthropic.APIStatusError as exc:
            return self._give_up(self._status_reason(exc))
        except anthropic.APITimeoutError:
            return self._give_up(
                f"Anthropic API timed out: no reply within {self.brain.timeout_s:g} s per request, "
                "retries included"
            )
        except anthropic.APIConnectionError as exc:
            return self._give_up(
                f"cannot reach the Anthropic API at {self.brain._client.base_url}: {exc}"
            )

    async def _loop(self) -> BrainResult:
        self._add_user([{"type": "text", "text": user_message(self.ticket)}])
        nudged = False
        force_submit = False
        while True:
            if self.turns >= self.budget.max_turns:
                return self._give_up(
                    f"budget exhausted: turns ({self.turns} of {self.budget.max_turns} used) "
                    "without a diagnosis"
                )
            if self.usage.total_tokens >= self.budget.max_total_tokens:
                return self._give_up(
                    f"budget exhausted: tokens ({self.usage.total_tokens} of "
                    f"{self.budget.max_total_tokens} used) after {_turns(self.turns)} "
                    "without a diagnosis"
                )
            reply = await self._create(force_submit)
            force_submit = False
            tool_uses = self._record_reply(reply)
            if tool_uses:
                results, diagnosis = await self._run_tools(tool_uses)
                if diagnosis is not None:
                    return BrainResult(diagnosis=diagnosis, steps=self.steps, usage=self.usage)
                self._add_user(results)
                continue
            if reply.stop_reason == "refusal":
                return self._give_up("the model declined to continue (stop_reason refusal)")
            if nudged:
                return self._give_up(
                    "the model ended its turn without calling submit_diagnosis, twice "
                    f"(stop_reason {reply.stop_reason})"
                )
            nudged = True
            force_submit = True
            self._add_user([{"type": "text", "text": NUDGE_TO_SUBMIT}])

    async def _create(self, force_submit: bool) -> Any:
        request: dict[str, Any] = {
            "model": self.brain.model,
            "max_tokens": self.budget.max_output_tokens_per_turn,
            "system": self.system,
            "tools": self.tool_params,
            "messages": _with_cache_breakpoint(self.messages),
        }
        if force_submit:
            request["tool_choice"] = {"type": "tool", "name": SUBMIT_DIAGNOSIS}
        self.turns += 1
        reply = await self.brain._client.messages.create(**request)
        self._add_usage(reply.usage)
        return reply

    def _record_reply(self, reply: Any) -> list[Any]:
        """Turn the reply into steps, keep it in the conversation, and return its tool calls."""
        echoed: list[dict[str, Any]] = []
        tool_uses: list[Any] = []
        for block in reply.content:
            if block.type == "text":
                echoed.append({"type": "text", "text": block.text})
                if block.text.strip():
                    self._step(Step(StepKind.REASONING, text=block.text))
            elif block.type == "tool_use":
                tool_input = block.input if isinstance(block.input, dict) else None
                # The API takes only an object here; the error result says what the model sent.
                echoed.append(
                    {
                        "type": "tool_use",
                        "id": block.id,
                        "name": block.name,
                        "input": tool_input or {},
                    }
                )
                self._step(
                    Step(
                        StepKind.TOOL_CALL,
                        tool=block.name,
                        tool_use_id=block.id,
                        input=tool_input,
                        text=""
                        if tool_input is not None
                        else f"malformed input: {_preview(block.input)}",
                    )
                )
                tool_uses.append(block)
            else:
                echoed.append(block.model_dump(mode="json", exclude_none=True))
        if echoed:
            self.messages.append({"role": "assistant", "content": echoed})
        return tool_uses

    async def _run_tools(
        self, tool_uses: Sequence[Any]
    ) -> tuple[list[dict[str, Any]], Diagnosis | None]:
        """Run every tool call of one reply, in order; results go back in one user message."""
        results: list[dict[str, Any]] = []
        diagnosis: Diagnosis | None = None
        for block in tool_uses:
            output, submitted = await self._run_one(block.name, block.id, block.input)
            text, full_size = output.capped()
            self._step(
                Step(
                    StepKind.TOOL_RESULT,
                    tool=block.name,
                    tool_use_id=block.id,
                    text=text,
                    is_error=output.is_error,
                    full_size=full_size,
                )
            )
            results.append(
                {
                    "type": "tool_result",
                    "tool_use_id": block.id,
                    "content": text,
                    "is_error": output.is_error,
                }
            )
            diagnosis = diagnosis or submitted
        return results, diagnosis

    async def _run_one(
        self, name: str, tool_use_id: str, tool_input: object
    ) -> tuple[ToolOutput, Diagnosis | None]:
        if not isinstance(tool_input, dict):
            return ToolOutput(
                f"{name} takes a JSON object as input, got {type(tool_input).__name__}: "
                f"{_preview(tool_input)}. Call it again with an object matching its schema.",
                is_error=True,
            ), None
        if name == SUBMIT_DIAGNOSIS:
            return self._check_diagnosis(tool_input)
        self.tool_use_ids.add(tool_use_id)
        try:
            return await self.tools.call(name, tool_input), None
        except Exception as exc:
            log.warning("tool %s failed", name, exc_info=True)
            return ToolOutput(
                f"tool {name} failed: {type(exc).__name__}: {exc}", is_error=True
            ), None

    def _check_diagnosis(
        self, tool_input: Mapping[str, Any]
    ) -> tuple[ToolOutput, Diagnosis | None]:
        try:
            diagnosis = Diagnosis.model_validate(tool_input)
        except ValidationError as exc:
            return ToolOutput(
                "submit_diagnosis rejected: the input does not match the schema:\n"
                + describe_validation_error(exc.errors())
                + "\nFix these and call submit_diagnosis again.",
                is_error=True,
            ), None
        unknown = sorted({e.tool_use_id for e in diagnosis.evidence} - self.tool_use_ids)
        if unknown:
            known = ", ".join(sorted(self.tool_use_ids)) or "none yet"
            return ToolOutput(
                f"submit_diagnosis rejected: evidence cites {', '.join(unknown)}, which "
                f"{'is' if len(unknown) == 1 else 'are'} not a tool call of this investigation "
                f"(tool_use_ids so far: {known}). Cite the tool results that show each claim.",
                is_error=True,
            ), None
        return ToolOutput("diagnosis recorded"), diagnosis

    def _add_user(self, blocks: list[dict[str, Any]]) -> None:
        if self.messages and self.messages[-1]["role"] == "user":
            self.messages[-1]["content"].extend(blocks)
        else:
            self.messages.append({"role": "user", "content": list(blocks)})

    def _add_usage(self, usage: Any) -> None:
        if usage is None:
            return
        self.usage.input_tokens += getattr(usage, "input_tokens", None) or 0
        self.usage.output_tokens += getattr(usage, "output_tokens", None) or 0
        self.usage.cache_read_tokens += getattr(usage, "cache_read_input_tokens", None) or 0
        self.usage.cache_write_tokens += getattr(usage, "cache_creation_input_tokens", None) or 0
        self.usage.estimated_cost_usd = self.brain.cost(self.usage)

    def _step(self, step: Step) -> None:
        self.steps.append(step)
        self.on_step(step)

    def _give_up(self, reason: str) -> BrainResult:
        reason = self._redact(reason)
        log.warning("ticket %s: claude brain escalates: %s", self.ticket.ticket_id, reason)
        return BrainResult(diagnosis=None, steps=self.steps, usage=self.usage, escalation=reason)

    def _redact(self, text: str) -> str:
        for secret in self.brain._secrets():
            text = text.replace(secret, "***")
        return " ".join(text.split())

    def _status_reason(self, exc: anthropic.APIStatusError) -> str:
        error_type, message = _error_fields(exc)
        what = f"{exc.status_code} {error_type}".strip()
        if isinstance(exc, anthropic.AuthenticationError):
            return f"Anthropic API rejected the credentials ({what}): set a valid ANTHROPIC_API_KEY"
        if exc.status_code == 403:  # the SDK's permission error
            return (
                f"Anthropic API refused the request ({what}): the ANTHROPIC_API_KEY has no "
                f"access to model {self.brain.model}"
            )
        retries = _retries_taken(exc)
        tail = f" after {retries} retries" if retries else ""
        detail = f": {_preview(message)}" if message else ""
        return f"Anthropic API error {what}{tail}{detail}"


def _with_cache_breakpoint(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A copy of the conversation whose last block is a cache breakpoint, so each turn reuses
    the prefix the previous one wrote."""
    if not messages or not messages[-1]["content"]:
        return messages
    last = messages[-1]
    blocks = [*last["content"][:-1], {**last["content"][-1], "cache_control": _EPHEMERAL}]
    return [*messages[:-1], {**last, "content": blocks}]


def _error_fields(exc: anthropic.APIStatusError) -> tuple[str, str]:
    body = exc.body
    if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
        body = body["error"]
    if isinstance(body, Mapping):
        return str(body.get("type") or ""), str(body.get("message") or "")
    return "", ""


def _retries_taken(exc: anthropic.APIStatusError) -> int:
    try:
        return int(exc.response.request.headers.get("x-stainless-retry-count", "0"))
    except (RuntimeError, ValueError):
        return 0


def _turns(count: int) -> str:
    return f"{count} turn" if count == 1 else f"{count} turns"


def _preview(value: object) -> str:
    text = value if isinstance(value, str) else repr(value)
    text = " ".join(text.split())
    return text if len(text) <= _PREVIEW else text[:_PREVIEW] + "…"


__all__ = ["ClaudeBrain"]
