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
    # A chain: given validated params, its ordered steps as (catalog action, params). The
    # executor runs them; `run` is not called. Judged by its riskiest step and every target.
    steps: Callable[[Any], list[tuple[str, dict[str, Any]]]] | None = None
    # A step's own verification: None once its effect holds, else what is still wrong. The
    # executor asks until the action's timeout; without it, a run that returns is the proof.
    check: Callable[[Any], Awaitable[str | None]] | None = None

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

    @property
    def is_chain(self) -> bool:
        return self.steps is not None

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
class Step:
    """One step of a chain as it will run: a catalog action with validated parameters."""

    spec: ActionSpec
    params: BaseModel

    @property
    def name(self) -> str:
        return self.spec.name

    def params_json(self) -> dict[str, Any]:
        return self.params.model_dump(mode="json")

    def targets(self) -> list[str]:
        return self.spec.targets(self.params_json())


@dataclass(frozen=True, slots=True)
class Plan:
    """An action as the executor runs it: a plain action (no steps) or a chain of steps.

    The policy judges it by `risk` (a chain's riskiest step) and `targets` (every target any
    step touches); what it is verified as follows its steps."""

    spec: ActionSpec
    params: BaseModel
    steps: tuple[Step, ...] = ()

    @property
    def name(self) -> str:
        return self.spec.name

    def params_json(self) -> dict[str, Any]:
        return self.params.model_dump(mode="json")

    @property
    def risk(self) -> Risk:
        risks = [self.spec.risk, *(step.spec.risk for step in self.steps)]
        return max(risks, key=RISK_ORDER.__getitem__)

    def targets(self) -> list[str]:
        if not self.steps:
            return self.spec.targets(self.params_json())
        found = [*self.spec.targets(self.params_json())]
        for step in self.steps:
            found += step.targets()
        return list(dict.fromkeys(found))

    @property
    def effect(self) -> Effect:
        """A chain fixes when a step does, else mitigates when a step does."""
        if not self.steps:
            return self.spec.effect
        effects = {step.spec.effect for step in self.steps}
        if "fix" in effects:
            return "fix"
        return "mitigate" if "mitigate" in effects else "diagnose"

    @property
    def verify(self) -> bool:
        if not self.steps:
            return self.spec.verify
        return self.spec.verify and any(step.spec.verify for step in self.steps)

    @property
    def cause(self) -> str | None:
        if not self.steps:
            return self.spec.cause
        causes = [s.spec.cause for s in self.steps if s.spec.effect == "mitigate" and s.spec.cause]
        return self.spec.cause or (causes[0] if causes else None)

    def describe_steps(self) -> list[dict[str, Any]]:
        """The steps as stored with the action: each starts pending."""
        return [
            {
                "index": i,
                "action": step.name,
                "params": step.params_json(),
                "risk": step.spec.risk,
                "targets": step.targets(),
                "undo": step.spec.undo,
                "state": "pending",
            }
            for i, step in enumerate(self.steps, start=1)
        ]


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

    def plan(self, name: str, params: Mapping[str, Any]) -> Plan:
        """The action validated as it will run; a chain's steps must each be one of this
        catalog's own actions (never a chain), with parameters valid for it."""
        spec = self.get(name)
        valid = spec.validate(params)
        if spec.steps is None:
            return Plan(spec, valid)
        steps: list[Step] = []
        for index, (step_name, step_params) in enumerate(spec.steps(valid), start=1):
            try:
                step_spec = self.get(step_name)
            except ActionInputError as exc:
                raise ActionInputError(f"{name}: step {index}: {exc}") from None
            if step_spec.is_chain:
                raise ActionInputError(
                    f"{name}: step {index}: {step_name} is a chain; a chain's steps are "
                    "single actions"
                )
            try:
                steps.append(Step(step_spec, step_spec.validate(step_params)))
            except ActionInputError as exc:
                raise ActionInputError(f"{name}: step {index}: {exc}") from None
        if not steps:
            raise ActionInputError(f"{name}: a chain needs at least one step")
        return Plan(spec, valid, tuple(steps))

    def undo_of(self, step: Step) -> Step | None:
        """The action that takes `step` back, with the step's target parameters, if the step
        declares one and this catalog has it."""
        if step.spec.undo is None or step.spec.undo not in self.names():
            return None
        undo = self.get(step.spec.undo)
        given = step.params_json()
        fields = undo.params.model_fields
        return Step(undo, undo.validate({k: v for k, v in given.items() if k in fields}))


def params_hash(name: str, params: Mapping[str, Any]) -> str:
    """What an approval is bound to: the action's name and its exact parameters."""
    canonical = json.dumps({"action": name, "params": params}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()
