"""Subjects are plug-ins: each knows how to run, observe and break one kind of system.

The core only speaks to the protocols below and finds subjects through the
`operator_console.subjects` entry-point group, so it never names one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from operator_console.domain import Invariant, Observation, WorkloadSample

if TYPE_CHECKING:
    from operator_console.actions.catalog import ActionCatalog
    from operator_console.agent.base import Toolbox
    from operator_console.agent.rules import Hypothesis


class SpecError(ValueError):
    """A scenario's topology or workload is wrong; `field` names the offending key."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class UnknownSubjectError(LookupError):
    pass


class Fault(Protocol):
    """A real failure that can be injected and cleared; `describe` is one line for narration."""

    kind: str
    target: str

    def describe(self) -> str: ...

    async def inject(self) -> None: ...

    async def clear(self) -> None: ...


class Lab(Protocol):
    """A runnable local system: processes the console starts, breaks and stops."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def endpoints(self) -> dict[str, Any]: ...

    def fault_kinds(self) -> Sequence[str]: ...

    def make_fault(self, kind: str, target: str | None, params: Mapping[str, Any]) -> Fault: ...


class Workload(Protocol):
    """Traffic driven at the lab; it reports a sample every second."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def adjust(self, changes: Mapping[str, Any]) -> None:
        """Change the traffic mid-run (a chapter's surge); raises SpecError on bad input."""
        ...


class Subject(Protocol):
    """Observes one system and names the invariants that must hold for it."""

    name: str

    @property
    def invariants(self) -> Sequence[Invariant]: ...

    async def observe(self) -> Observation: ...

    async def close(self) -> None: ...


SampleSink = Callable[[WorkloadSample], None]


class AgentKit(Protocol):
    """What the operator agent gets from a subject: actions, tools, runbook, context."""

    @property
    def actions(self) -> ActionCatalog: ...

    @property
    def runbook(self) -> str:
        """Runbook hints as text, for a model."""
        ...

    @property
    def context(self) -> str:
        """What this system is, for a model."""
        ...

    def toolbox(self) -> Toolbox:
        """Read-only investigation tools (observe, details, metrics, logs, list actions)."""
        ...

    def hypotheses(self, invariant: str) -> Sequence[Hypothesis]:
        """The runbook as hypotheses the offline rules brain can test."""
        ...


@dataclass(slots=True)
class Deployment:
    """Everything one run of a subject needs: the lab, its workload, the observer, the agent kit."""

    lab: Lab
    subject: Subject
    workload: Workload | None
    agent: AgentKit | None = None


class SubjectKind(Protocol):
    """The plug-in entry point for one kind of subject."""

    name: str
    description: str

    def validate(self, topology: Mapping[str, Any], workload: Mapping[str, Any]) -> None:
        """Raise SpecError naming the field when the scenario's topology or workload is wrong."""
        ...

    def validate_workload_change(self, changes: Mapping[str, Any]) -> None: ...

    def fault_kinds(self) -> Sequence[str]: ...

    def invariant_names(self) -> Sequence[str]: ...

    def action_names(self) -> Sequence[str]: ...

    def targets(self, topology: Mapping[str, Any]) -> Sequence[str]:
        """Names a fault may target in this topology."""
        ...

    def deploy(
        self,
        topology: Mapping[str, Any],
        workload: Mapping[str, Any],
        run_dir: Path,
        on_sample: SampleSink,
    ) -> Deployment: ...


def subject_kinds() -> dict[str, SubjectKind]:
    """Every installed subject kind by name."""
    kinds: dict[str, SubjectKind] = {}
    for ep in entry_points(group="operator_console.subjects"):
        factory = ep.load()
        kinds[ep.name] = factory()
    return kinds


def get_subject_kind(name: str) -> SubjectKind:
    kinds = subject_kinds()
    try:
        return kinds[name]
    except KeyError:
        known = ", ".join(sorted(kinds)) or "none installed"
        raise UnknownSubjectError(f"unknown subject {name!r} (known: {known})") from None
