"""Typed actions: each declares its parameters, risk, what it restores and how long it may take."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

Risk = Literal["low", "medium", "high"]


class ActionInputError(ValueError):
    """An action name or its parameters are not acceptable; the message says which and why."""


@dataclass(frozen=True, slots=True)
class ActionSpec:
    name: str
    description: str
    params: type[BaseModel]
    risk: Risk
    restores: tuple[str, ...]  # invariants this action is meant to bring back
    timeout_s: float
    run: Callable[[Any], Awaitable[str]]  # takes validated params, returns what happened
    retry: bool = True  # a failed run is tried again (with backoff); not for commands
    verify: bool = True  # re-observe until the ticket's invariant clears; not for diagnostics

    def validate(self, params: Mapping[str, Any]) -> BaseModel:
        try:
            return self.params.model_validate(dict(params))
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(p) for p in error["loc"]) or "params"
            raise ActionInputError(f"{self.name}: {where}: {error['msg']}") from None

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "risk": self.risk,
            "restores": list(self.restores),
            "timeout_s": self.timeout_s,
            "params": self.params.model_json_schema(),
        }


class ActionCatalog:
    def __init__(self, specs: list[ActionSpec]) -> None:
        self._specs = {spec.name: spec for spec in specs}

    def with_action(self, spec: ActionSpec) -> ActionCatalog:
        """This catalog plus one more action."""
        return ActionCatalog([*self._specs.values(), spec])

    def names(self) -> list[str]:
        return list(self._specs)

    def get(self, name: str) -> ActionSpec:
        try:
            return self._specs[name]
        except KeyError:
            raise ActionInputError(
                f"unknown action {name!r} (known: {', '.join(self._specs)})"
            ) from None

    def describe(self) -> list[dict[str, Any]]:
        return [spec.describe() for spec in self._specs.values()]


def params_hash(name: str, params: Mapping[str, Any]) -> str:
    """What an approval is bound to: the action's name and its exact parameters."""
    canonical = json.dumps({"action": name, "params": params}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()
