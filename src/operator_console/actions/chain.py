"""Chains: a remediation of several catalog actions in order, approved once.

A subject may offer its own chains (an `ActionSpec` with `steps`: etcd's NOSPACE fix is compact,
defragment each member, disarm the alarm). `chain_action` adds the generic one: any ordered list
of the catalog's own actions, so a brain can compose a sequence but never invent a step. A chain
is judged by its riskiest step and every target its steps touch; a failing step stops it and the
steps before it are undone where they declare an undo.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from operator_console.contract import ActionSpec

CHAIN_ACTION = "chain"
MAX_STEPS = 10


class ChainStepParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: str = Field(min_length=1, description="a catalog action (not a chain)")
    params: dict[str, Any] = Field(default_factory=dict)


class ChainParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: list[ChainStepParams] = Field(min_length=2, max_length=MAX_STEPS)


async def _never(_params: Any) -> str:
    raise RuntimeError("a chain runs step by step; the executor runs its steps")


def chain_action() -> ActionSpec:
    """The generic chain: its steps are catalog actions with their parameters."""
    return ActionSpec(
        CHAIN_ACTION,
        "Run several catalog actions in order under one approval (e.g. drain a node, then "
        "restart it). A failing step stops the chain; earlier steps are undone where they "
        "declare an undo. Judged by its riskiest step and every target.",
        ChainParams,
        "low",
        (),
        600.0,
        _never,
        retry=False,
        steps=lambda p: [(s.action, dict(s.params)) for s in p.steps],
    )
