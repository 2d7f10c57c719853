"""What a subject plug-in implements: its kind (the entry point), the lab it can run, the
workload it drives, the observer that reads it, and the kit the agent works with.

The core speaks only to these protocols and finds subjects through the
`operator_console.subjects` entry-point group, so it never names one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Literal, Protocol

from operator_console.contract.actions import ActionCatalog
from operator_console.contract.hypotheses import Hypothesis
from operator_console.contract.processes import ProcessBackend
from operator_console.contract.tools import Toolbox
from operator_console.contract.views import ClusterView, SeriesSpec
from operator_console.domain import Invariant, Observation, WorkloadSample

# local: the console starts the processes; attach: a cluster it did not start (`watch`);
# compose: a compose stack the console brings up and down around a scenario.
Placement = Literal["local", "attach", "compose"]


class SpecError(ValueError):
    """A scenario's topology, workload or an endpoints file is wrong; `field` names the key."""

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
    """What the subject runs on: processes the console starts, or a cluster it attached to."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def endpoints(self) -> dict[str, Any]:
        """The endpoints file `watch` takes (JSON-able); with pids where there are processes."""
        ...

    def about(self) -> str:
        """One line for the picker and the timeline: what runs (binary, version, where)."""
        ...

    def fault_kinds(self) -> Sequence[str]: ...

    def make_fault(self, kind: str, target: str | None, params: Mapping[str, Any]) -> Fault: ...


class Workload(Protocol):
    """Traffic driven at the subject, or only measured; it reports a sample every second."""

    @property
    def series(self) -> Sequence[SeriesSpec]:
        """The lines of the workload panel, in order."""
        ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def adjust(self, changes: Mapping[str, Any]) -> None:
        """Change the traffic mid-run (a chapter's surge); raises SpecError on bad input."""
        ...

    async def ground_truth(self) -> Mapping[str, Any] | None:
        """What the workload's own record of the run says once it is over (it may stop the
        traffic to read it), for the run's summary; None when it keeps no such record."""
        ...


class Subject(Protocol):
    """Observes one system, names the invariants that must hold, and draws its panel."""

    name: str

    @property
    def invariants(self) -> Sequence[Invariant]: ...

    async def observe(self) -> Observation: ...

    def panel(self, observation: Observation) -> ClusterView:
        """The cluster panel's rows for this observation."""
        ...

    def condition(self, name: str, target: str, observation: Observation) -> Condition | None:
        """Whether a named cause (an `ActionSpec.cause`) still holds on a target, for a
        mitigated ticket; None when this subject knows no such condition."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Condition:
    """The state of a cause a mitigation hides: `holds` while it is still there, and what
    remains, in words (e.g. "its store link is still slow: health 612 ms")."""

    holds: bool
    remains: str


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
    placement: Placement = "local"


@dataclass(frozen=True, slots=True)
class RuntimeDescription:
    """What a subject's local lab would run on this machine (binary, release, where it was
    found), said before anything starts. `deploys` is False for a subject the console can only
    watch (`operator-console watch NAME --endpoints FILE`); `ready` is False when the lab cannot
    start here, and `summary` then names the fix."""

    summary: str
    deploys: bool = True
    ready: bool = True


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

    def sized(self, size: int) -> dict[str, Any]:
        """The topology of a cluster of `size` (nodes, members...) for `lab up --size`."""
        ...

    def deploy(
        self,
        topology: Mapping[str, Any],
        workload: Mapping[str, Any] | None,
        run_dir: Path,
        on_sample: SampleSink,
    ) -> Deployment:
        """A local lab the console starts itself (no workload when `workload` is None)."""
        ...

    def describe_runtime(self) -> RuntimeDescription:
        """What `deploy` would run on this machine, for the picker; blocking (it may run a
        binary's `--version`), so a UI calls it from a thread. Never raises."""
        ...

    def validate_endpoints(self, endpoints: Mapping[str, Any]) -> None:
        """Raise SpecError naming the field when an endpoints file is wrong for this subject."""
        ...

    def attach(
        self,
        endpoints: Mapping[str, Any],
        run_dir: Path,
        on_sample: SampleSink,
        *,
        processes: ProcessBackend | None = None,
        workload: Mapping[str, Any] | None = None,
    ) -> Deployment:
        """A cluster the console did not start, from an endpoints file; raises SpecError.

        With `processes` (a compose stack's containers) the actions that restart, resume or
        read a process are available, and the lab offers the faults those processes allow;
        with `workload` (a scenario run on a stack) the subject drives that traffic where it
        can, instead of only measuring."""
        ...


class LazySubject:
    """A subject whose observer is built on first use, once the lab knows its addresses."""

    def __init__(
        self,
        name: str,
        invariants: Sequence[Invariant],
        build: Callable[[], Subject],
    ) -> None:
        self.name = name
        self.invariants = list(invariants)
        self._build = build
        self._subject: Subject | None = None

    @property
    def built(self) -> Subject:
        if self._subject is None:
            self._subject = self._build()
        return self._subject

    async def observe(self) -> Observation:
        return await self.built.observe()

    def panel(self, observation: Observation) -> ClusterView:
        return self.built.panel(observation)

    def condition(self, name: str, target: str, observation: Observation) -> Condition | None:
        return self.built.condition(name, target, observation)

    async def close(self) -> None:
        if self._subject is not None:
            await self._subject.close()


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


class AttachedLab:
    """The `Lab` of a cluster the console did not start: nothing to start or stop, and no
    fault injection (faults belong to labs the console runs itself)."""

    def __init__(self, endpoints: Mapping[str, Any], about: str) -> None:
        self._endpoints = dict(endpoints)
        self._about = about

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def endpoints(self) -> dict[str, Any]:
        return dict(self._endpoints)

    def about(self) -> str:
        return self._about

    def fault_kinds(self) -> Sequence[str]:
        return ()

    def make_fault(self, kind: str, target: str | None, params: Mapping[str, Any]) -> Fault:
        raise ValueError("fault injection is off for a cluster the console did not start")
