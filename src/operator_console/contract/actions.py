"""Typed actions: each declares its parameters, risk, the targets it touches, what it restores
and whether that is a fix (the cause is gone) or a mitigation (the symptom is gone)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

Risk = Literal["low", "medium", "high"]
Effect = Literal["fix", "mitigate", "diagnose"]
RISK_ORDER: dict[str, int] = {"low": 0, "medium": 1, "high": 2}


class ActionInputError(ValueError):
    """An action name or its parameters are not acceptable; the message says which and why."""


@dataclass(frozen=True, slots=True)
class ActionSpec:
    """One action a subject offers. `target_params` names the parameters whose values are
    targets (a node, a member, a key); `fixed_targets` are touched whatever the parameters."""

    name: str
    description: str
    params: type[BaseModel]
    risk: Risk
    restores: tuple[str, ...]  # invariants this action is meant to bring back
    timeout_s: float
    run: Callable[[Any], Awaitable[str]]  # takes validated params, returns what happened
    retry: bool = True  # a failed run is tried again (with backoff); not for commands
    verify: bool = True  # re-observe until the ticket's invariant clears; not for diagnostics
    target_params: tuple[str, ...] = ()
    fixed_targets: tuple[str, ...] = ()
    effect: Effect = "fix"
    undo: str | None = None  # the action that takes a mitigation back, same target parameters
    cause: str | None = None  # the subject's condition that tells when a mitigation may end

    def validate(self, params: Mapping[str, Any]) -> BaseModel:
        try:
            return self.params.model_validate(dict(params))
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(p) for p in error["loc"]) or "params"
            raise ActionInputError(f"{self.name}: {where}: {error['msg']}") from None

    def targets(self, params: Mapping[str, Any]) -> list[str]:
        """Every target this action touches with these parameters."""
        named = [str(params[p]) for p in self.target_params if params.get(p) is not None]
        return list(dict.fromkeys([*named, *self.fixed_targets]))

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "risk": self.risk,
            "restores": list(self.restores),
            "effect": self.effect,
            "undo": self.undo,
            "timeout_s": self.timeout_s,
            "params": self.params.model_json_schema(),
        }


@dataclass(frozen=True, slots=True)
class ActionCatalog:
    """The actions one deployment offers, and those it knows of but cannot do here (and why)."""

    specs: tuple[ActionSpec, ...]
    unavailable: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [spec.name for spec in self.specs]
        if len(names) != len(set(names)):
            raise ValueError(f"duplicate action names in {names}")

    def with_action(self, spec: ActionSpec) -> ActionCatalog:
        """This catalog plus one more action."""
        return ActionCatalog((*self.specs, spec), self.unavailable)

    def names(self) -> list[str]:
        return [spec.name for spec in self.specs]

    def get(self, name: str) -> ActionSpec:
        for spec in self.specs:
            if spec.name == name:
                return spec
        if name in self.unavailable:
            raise ActionInputError(
                f"action {name!r} is not available here: {self.unavailable[name]}"
            )
        raise ActionInputError(f"unknown action {name!r} (known: {', '.join(self.names())})")

    def describe(self) -> list[dict[str, Any]]:
        return [spec.describe() for spec in self.specs]


def params_hash(name: str, params: Mapping[str, Any]) -> str:
    """What an approval is bound to: the action's name and its exact parameters."""
    canonical = json.dumps({"action": name, "params": params}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()
