"""Which brain speaks: Claude when a key or a compatible endpoint is configured, else rules."""

from __future__ import annotations

from dataclasses import dataclass

from operator_console.agent.base import Brain, Budget
from operator_console.agent.rules import RulesBrain
from operator_console.contract import AgentKit
from operator_console.settings import Settings


class BrainChoiceError(ValueError):
    """Claude was asked for but cannot be reached; the message names the fix."""


@dataclass(frozen=True, slots=True)
class BrainChoice:
    brain: Brain
    why: str


def choose_brain(settings: Settings, kit: AgentKit, choice: str | None = None) -> BrainChoice:
    choice = choice or settings.brain
    key = settings.anthropic_api_key.get_secret_value() if settings.anthropic_api_key else None
    base_url = settings.anthropic_base_url
    claude_available = bool(key or base_url)
    if choice == "rules" or (choice == "auto" and not claude_available):
        why = "chosen with --brain rules" if choice == "rules" else "no ANTHROPIC_API_KEY set"
        return BrainChoice(RulesBrain(kit.hypotheses), f"offline rules brain ({why})")
    if not claude_available:
        raise BrainChoiceError(
            "--brain claude needs ANTHROPIC_API_KEY (or ANTHROPIC_BASE_URL for a compatible "
            "server); set one, or use --brain rules"
        )
    from operator_console.agent.claude import ClaudeBrain

    budget = Budget(
        max_turns=settings.agent_max_turns,
        max_output_tokens_per_turn=settings.agent_max_output_tokens,
        max_total_tokens=settings.agent_max_total_tokens,
        max_wall_s=settings.agent_max_wall_s,
    )
    brain = ClaudeBrain(
        # A compatible local server may not check keys; the SDK still wants one.
        api_key=key or "no-key",
        base_url=base_url,
        model=settings.model,
        budget=budget,
    )
    where = f" at {base_url}" if base_url else ""
    return BrainChoice(brain, f"Claude {settings.model}{where}")
