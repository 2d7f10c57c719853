"""Scenario files: a subject and its topology, a workload, narrated chapters, expectations."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from operator_console.contract import SpecError, UnknownSubjectError, get_subject_kind
from operator_console.runtime import RunPlan


class ScenarioError(ValueError):
    """A scenario file is broken; the message names the file, the field and the problem."""

    def __init__(self, path: Path | str, field: str, problem: str) -> None:
        where = f"{path}: {field}: " if field else f"{path}: "
        super().__init__(where + problem)
        self.path = path
        self.field = field
        self.problem = problem


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FaultSpec(_Strict):
    kind: str
    target: str | None = None
    countdown: float = Field(default=3.0, ge=0, le=60)
    params: dict[str, Any] = Field(default_factory=dict)


WaitEvent = Literal[
    "ticket_opened", "ticket_resolved", "ticket_mitigated", "violation_detected", "healthy"
]


class WaitFor(_Strict):
    event: WaitEvent
    invariant: str | None = None
    target: str | None = None
    timeout: float = Field(default=30.0, gt=0, le=600)
    # Only an operator can make it happen (a mitigation): skipped when no agent may act.
    needs_agent: bool = False


class Chapter(_Strict):
    title: str = Field(min_length=1)
    narration: str = ""
    duration: float = Field(default=3.0, ge=0, le=600)
    workload: dict[str, Any] | None = None
    fault: FaultSpec | None = None
    repair: bool = False  # undo the faults injected so far (the link is fixed, the disk freed)
    wait_for: WaitFor | None = None


class Expect(_Strict):
    invariants: list[str] = Field(default_factory=list)
    target: str | None = None
    action: str | None = None  # the remediation an operator should verify
    # The diagnosis' stable root-cause label (a hypothesis name), or the labels that are right.
    root_cause: str | list[str] | None = None
    any_invariant: bool = False  # one of `invariants` firing (on the target) is enough
    recovers: bool = True
    recover_timeout: float = Field(default=45.0, gt=0, le=600)


class Scenario(_Strict):
    name: str
    title: str = Field(min_length=1)
    description: str = ""
    subject: str
    # Where it runs: the console's own processes, or a compose stack it brings up and down
    # (`compose` names the stack's folder, relative to the project; --compose overrides it).
    placement: Literal["local", "compose"] = "local"
    compose: str | None = None
    topology: dict[str, Any] = Field(default_factory=dict)
    workload: dict[str, Any] = Field(default_factory=dict)
    chapters: list[Chapter] = Field(min_length=1)
    expect: Expect = Field(default_factory=Expect)
    path: Path | None = Field(default=None, exclude=True)

    @property
    def faults(self) -> list[FaultSpec]:
        return [c.fault for c in self.chapters if c.fault is not None]

    @property
    def plan(self) -> RunPlan:
        """What the runtime runs for this scenario."""
        return RunPlan(
            name=self.name,
            subject=self.subject,
            topology=dict(self.topology),
            workload=dict(self.workload),
            chapters=len(self.chapters),
            placement=self.placement,
            compose=self.compose if self.placement == "compose" else None,
        )

    def on_stack(self, directory: str) -> Scenario:
        """The same scenario run on the compose stack in `directory`."""
        return self.model_copy(update={"placement": "compose", "compose": directory})


def _field_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def parse_scenario(data: dict[str, Any], path: Path | str, *, name: str) -> Scenario:
    """Validate a scenario's data, including what only its subject can judge."""
    data = {"name": name, **data}
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        raise ScenarioError(path, _field_path(tuple(error["loc"])), error["msg"]) from None
    if scenario.placement == "compose" and not scenario.compose:
        raise ScenarioError(path, "compose", "a compose placement needs the stack's folder")
    try:
        kind = get_subject_kind(scenario.subject)
    except UnknownSubjectError as exc:
        raise ScenarioError(path, "subject", str(exc)) from None
    try:
        kind.validate(scenario.topology, scenario.workload)
    except SpecError as exc:
        raise ScenarioError(path, exc.field, exc.problem) from None
    known_faults = list(kind.fault_kinds())
    targets = list(kind.targets(scenario.topology))
    for i, chapter in enumerate(scenario.chapters):
        where = f"chapters[{i}]"
        if chapter.workload is not None:
            try:
                kind.validate_workload_change(chapter.workload)
            except SpecError as exc:
                raise ScenarioError(path, f"{where}.{exc.field}", exc.problem) from None
        fault = chapter.fault
        if fault is not None:
            if fault.kind not in known_faults:
                raise ScenarioError(
                    path,
                    f"{where}.fault.kind",
                    f"unknown fault {fault.kind!r} (known: {', '.join(known_faults)})",
                )
            if fault.target is not None and fault.target not in targets:
                raise ScenarioError(
                    path,
                    f"{where}.fault.target",
                    f"no target {fault.target!r} in this topology (targets: {', '.join(targets)})",
                )
    if scenario.expect.action is not None and scenario.expect.action not in kind.action_names():
        raise ScenarioError(
            path,
            "expect.action",
            f"unknown action {scenario.expect.action!r} (known: {', '.join(kind.action_names())})",
        )
    known_invariants = set(kind.invariant_names())
    for i, invariant in enumerate(scenario.expect.invariants):
        if invariant not in known_invariants:
            raise ScenarioError(
                path,
                f"expect.invariants[{i}]",
                f"unknown invariant {invariant!r} (known: {', '.join(sorted(known_invariants))})",
            )
    return scenario.model_copy(update={"path": Path(path)})


def load_scenario_file(path: Path) -> Scenario:
    """Read, parse and validate one scenario file; every problem is one ScenarioError."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ScenarioError(path, "", f"cannot read the file: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScenarioError(
            path, "", f"not UTF-8 text (byte {exc.start}); a scenario is a TOML text file"
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(path, "", f"not valid TOML: {exc}") from None
    except RecursionError:
        raise ScenarioError(path, "", "not valid TOML: nested too deeply") from None
    return parse_scenario(data, path, name=path.stem)
