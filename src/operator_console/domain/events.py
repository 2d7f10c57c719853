"""Every event of a run, one class each: the timeline, the console and the loops all speak these.

A publisher builds an event without a time; the bus stamps `t` (seconds since the run started,
monotonic) and `at` (UTC) when it publishes it. `to_dict` is the event's line in the headless
timeline: `t`, `at`, `event` (the class's `name`) and its fields.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

_STAMP = frozenset({"t", "at"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base of every event; `t` and `at` are set by the bus."""

    name: ClassVar[str] = ""
    on_timeline: ClassVar[bool] = True
    t: float = 0.0
    at: datetime | None = None

    def fields(self) -> dict[str, Any]:
        """The event's own fields (not its time stamps)."""
        return {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in _STAMP
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "t": round(self.t, 3),
            "at": self.at.isoformat() if self.at else None,
            "event": self.name,
            **self.fields(),
        }


# --------------------------------------------------------------------------- the run


@dataclass(frozen=True, slots=True, kw_only=True)
class RunStarted(Event):
    """A run began: its id, the scenario (or `watch`), the subject and where its files go."""

    name: ClassVar[str] = "run_started"
    run_id: str
    scenario: str
    subject: str
    run_dir: str
    chapters: int
    placement: str = "local"


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterReady(Event):
    """The subject answers: what it runs on (the endpoints file `watch` takes)."""

    name: ClassVar[str] = "cluster_ready"
    endpoints: dict[str, Any]
    about: str = ""
    series: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkloadSampled(Event):
    """One second of traffic: the subject's series (their names are the fields) per target."""

    name: ClassVar[str] = "workload_sample"
    values: dict[str, float | None]
    per_target: dict[str, dict[str, Any]] = field(default_factory=dict)

    def fields(self) -> dict[str, Any]:
        return {**self.values, "per_target": self.per_target}


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkloadChanged(Event):
    """A chapter changed the traffic."""

    name: ClassVar[str] = "workload_changed"
    changes: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class ChapterEntered(Event):
    """The story moved to chapter `index` of `total`."""

    name: ClassVar[str] = "chapter_entered"
    index: int
    total: int
    title: str
    narration: str
    fault: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultCountdown(Event):
    """A fault is about to be injected in `seconds`."""

    name: ClassVar[str] = "fault_countdown"
    kind: str
    target: str | None
    seconds: float


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultInjected(Event):
    """A real fault was injected: what was done to which target."""

    name: ClassVar[str] = "fault_injected"
    kind: str
    target: str
    params: dict[str, Any]
    description: str


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultCleared(Event):
    """The fault was undone, by the scenario (no agent) or at the end of the run."""

    name: ClassVar[str] = "fault_cleared"
    kind: str
    target: str
    by: str


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultClearFailed(Event):
    """Undoing a fault failed; the run goes on."""

    name: ClassVar[str] = "fault_clear_failed"
    kind: str
    target: str
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class WaitTimedOut(Event):
    """A chapter waited for something that did not happen in time."""

    name: ClassVar[str] = "wait_timed_out"
    chapter: int
    problem: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFinished(Event):
    """The run ended: whether it showed what the scenario expects, and a summary."""

    name: ClassVar[str] = "run_finished"
    ok: bool
    summary: dict[str, Any]


# ---------------------------------------------------------------------------- monitor


@dataclass(frozen=True, slots=True, kw_only=True)
class Observed(Event):
    """One monitor tick: each source's status, the subject's state and panel, the violations.

    Per-tick internals the console draws; the timeline carries their consequences instead."""

    name: ClassVar[str] = "observation"
    on_timeline: ClassVar[bool] = False
    subject: str
    sources: dict[str, dict[str, Any]]
    state: dict[str, Any]
    violations: list[str]
    panel: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class ViolationDetected(Event):
    """An invariant stopped holding on a target (a ticket opens once its grace has passed)."""

    name: ClassVar[str] = "violation_detected"
    invariant: str
    target: str
    severity: str
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TicketEvent(Event):
    """What every ticket event says about the ticket."""

    ticket_id: int
    invariant: str
    target: str
    severity: str
    state: str
    occurrences: int
    message: str
    first_seen: str | None = None
    after_action_id: int | None = None
    incident_id: int | None = None
    remains: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TicketOpened(TicketEvent):
    """A violation outlasted its grace: a ticket is open."""

    name: ClassVar[str] = "ticket_opened"


@dataclass(frozen=True, slots=True, kw_only=True)
class TicketUpdated(TicketEvent):
    """The ticket changed: its state, or its numbers (at most every few seconds)."""

    name: ClassVar[str] = "ticket_updated"
    reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TicketResolved(TicketEvent):
    """The invariant holds again: after clean ticks (the monitor) or a verified fix (the agent)."""

    name: ClassVar[str] = "ticket_resolved"
    by: str = "monitor"
    clean_ticks: int | None = None
    action_id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TicketMitigated(TicketEvent):
    """A mitigation was verified: the symptom is gone, the cause remains (`remains` says what);
    the monitor watches the cause, and the agent undoes the mitigation once it clears."""

    name: ClassVar[str] = "ticket_mitigated"
    action_id: int
    cause: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CauseCleared(TicketEvent):
    """The cause a mitigation left behind has cleared: the mitigation can be undone."""

    name: ClassVar[str] = "cause_cleared"
    cause: str
    detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TicketAbandoned(TicketEvent):
    """The ticket's run ended (or its console died) before it was resolved."""

    name: ClassVar[str] = "ticket_abandoned"
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class WaitingForPerson(Event):
    """The run waits for a person to decide an action; repeated every few seconds."""

    name: ClassVar[str] = "waiting_for_person"
    action_id: int
    ticket_id: int | None
    action: str
    params: dict[str, Any]
    why: str
    waited_s: float
    limit_s: float
    command: str


@dataclass(frozen=True, slots=True, kw_only=True)
class WaitingForRecovery(Event):
    """The run waits for the cluster to recover with nothing proposed; repeated every few
    seconds with what is open and why."""

    name: ClassVar[str] = "waiting_for_recovery"
    waited_s: float
    limit_s: float
    why: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TicketEscalated(TicketEvent):
    """A person must look, and why."""

    name: ClassVar[str] = "ticket_escalated"
    reason: str
    usage: dict[str, Any] | None = None


# ------------------------------------------------------------------------------ agent


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentReady(Event):
    """The agent is on: which brain speaks, why that one, the mode and the kill switch."""

    name: ClassVar[str] = "agent_ready"
    brain: str
    why: str
    mode: str
    kill_switch: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentStarted(Event):
    """A brain took a ticket to investigate."""

    name: ClassVar[str] = "agent_started"
    ticket_id: int
    brain: str
    invariant: str
    target: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentStep(Event):
    """One step of an investigation: reasoning, a tool call or a tool result."""

    name: ClassVar[str] = "agent_step"
    ticket_id: int
    brain: str
    seq: int
    kind: str
    text: str
    tool: str | None = None
    tool_use_id: str | None = None
    input: dict[str, Any] | None = None
    is_error: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class DiagnosisReady(Event):
    """A brain finished: root cause, evidence, alternatives, recommendation and what it cost."""

    name: ClassVar[str] = "diagnosis_ready"
    ticket_id: int
    brain: str
    summary: str
    root_cause: str
    confidence: float
    evidence: list[dict[str, Any]]
    label: str = ""
    alternatives: list[dict[str, Any]]
    recommended: list[dict[str, Any]]
    usage: dict[str, Any]


# ---------------------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionEvent(Event):
    """What every action event says about the action."""

    action_id: int
    ticket_id: int | None
    action: str
    params: dict[str, Any]
    risk: str
    state: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionProposed(ActionEvent):
    """The agent proposed an action, and what the policy decided about it (and why)."""

    name: ClassVar[str] = "action_proposed"
    reason: str = ""
    decision: str = ""
    why: str = ""
    mode: str = ""
    expires_at: str | None = None
    targets: list[str] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)  # a chain's, each one named


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionDecided(ActionEvent):
    """A person, the policy or the clock decided about an action."""

    by: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionApproved(ActionDecided):
    """A person (or the policy, in auto mode) approved the action."""

    name: ClassVar[str] = "action_approved"


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionScheduled(ActionDecided):
    """Approved for later: it runs at `runs_at` (a person's time, or the next maintenance window),
    after the same checks as any approved action."""

    name: ClassVar[str] = "action_scheduled"
    runs_at: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionRejected(ActionDecided):
    """A person rejected the action, or the executor refused it at claim time."""

    name: ClassVar[str] = "action_rejected"


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionExpired(ActionDecided):
    """Nobody decided in time, or an approval lapsed unused."""

    name: ClassVar[str] = "action_expired"


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionCancelled(ActionDecided):
    """The kill switch (or a run's end) cancelled the pending action."""

    name: ClassVar[str] = "action_cancelled"


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionExecuting(ActionEvent):
    """The executor claimed the action's approval and runs it."""

    name: ClassVar[str] = "action_executing"


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionStep(ActionEvent):
    """One step of a chain changed state: executing, succeeded, failed, or (after a later
    step failed) undone, undo_failed, skipped; cancelled by the kill switch."""

    name: ClassVar[str] = "action_step"
    index: int
    step: str
    step_params: dict[str, Any]
    step_state: str
    detail: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionSucceeded(ActionEvent):
    """The action ran without error (not yet verified)."""

    name: ClassVar[str] = "action_succeeded"
    result: str | None = None
    attempts: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionFailed(ActionEvent):
    """The action failed, or could not start."""

    name: ClassVar[str] = "action_failed"
    error: str
    attempts: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionVerified(ActionEvent):
    """Re-observation shows the invariant the action restores holds."""

    name: ClassVar[str] = "action_verified"
    detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionNotVerified(ActionEvent):
    """The action ran but the invariant did not come back."""

    name: ClassVar[str] = "action_not_verified"
    detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionInterrupted(Event):
    """An action was executing when a console stopped; it is never re-run without approval."""

    name: ClassVar[str] = "action_interrupted"
    action_id: int
    action: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionInvalid(Event):
    """A brain recommended an action the catalog does not have, or bad parameters."""

    name: ClassVar[str] = "action_invalid"
    ticket_id: int
    action: str
    error: str


# --------------------------------------------------------------------------- controls


@dataclass(frozen=True, slots=True, kw_only=True)
class ModeChanged(Event):
    """The operating mode changed (here or from another process)."""

    name: ClassVar[str] = "mode_changed"
    mode: str
    previous: str


@dataclass(frozen=True, slots=True, kw_only=True)
class KillSwitch(Event):
    """The kill switch was engaged or lifted."""

    name: ClassVar[str] = "kill_switch"
    on: bool


def event_classes() -> list[type[Event]]:
    """Every concrete event class (one with a name), in declaration order."""
    # From this module's namespace: `dataclass(slots=True)` replaces each class with a new one,
    # so `Event.__subclasses__()` may still list the originals.
    return [
        value
        for value in globals().values()
        if isinstance(value, type) and issubclass(value, Event) and value.name
    ]


_BY_NAME: dict[str, type[Event]] = {}


def event_from_dict(data: dict[str, Any]) -> Event:
    """An event back from its timeline line (a recorded run, a stored timeline)."""
    fields = dict(data)
    name = fields.pop("event")
    t = float(fields.pop("t", 0.0))
    at_text = fields.pop("at", None)
    at = datetime.fromisoformat(at_text) if at_text else None
    if not _BY_NAME:
        _BY_NAME.update({cls.name: cls for cls in event_classes()})
    try:
        cls = _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown event {name!r}") from None
    if cls is WorkloadSampled:
        per_target = fields.pop("per_target", {})
        return WorkloadSampled(values=fields, per_target=per_target, t=t, at=at)
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in fields.items() if k in known}, t=t, at=at)


def timeline_reference() -> str:
    """docs/timeline.md: every event on the headless timeline, with its fields, from the classes."""
    lines = [
        "# The timeline",
        "",
        "`operator-console run SCENARIO --headless` and `watch SUBJECT --headless` write one JSON",
        "object per line on stdout: `t` (seconds since the run started, monotonic), `at` (UTC",
        "ISO-8601), `event` (the name below) and the event's fields. This page is generated from",
        "the event classes in `src/operator_console/domain/events.py`",
        "(`python docs/timeline.py` writes it anew; a test checks it is current).",
        "",
    ]
    for cls in event_classes():
        if not cls.on_timeline:
            continue
        doc = " ".join((cls.__doc__ or "").split())
        lines += [f"## `{cls.name}`", "", doc, ""]
        if cls is WorkloadSampled:
            lines.append(
                "- one field per series of the subject's workload, named by the `key` of each "
                "entry of `cluster_ready`'s `series`"
            )
            lines += ["- `per_target`: `dict`", ""]
            continue
        for f in dataclasses.fields(cls):
            if f.name in _STAMP:
                continue
            kind = str(f.type).replace("'", "")
            lines.append(f"- `{f.name}`: `{kind}`")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def doing(events: Sequence[Event], action: str) -> set[int]:
    """The actions among `events` that are `action`, or chains with it as a step."""
    ids = set()
    for event in events:
        if isinstance(event, ActionProposed) and (
            event.action == action or any(s.get("action") == action for s in event.steps)
        ):
            ids.add(event.action_id)
    return ids
