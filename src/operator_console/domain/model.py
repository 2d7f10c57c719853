"""Plain types shared by every layer: observations, violations, tickets, workload samples."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol


def utcnow() -> datetime:
    """Return the current time as a timezone-aware UTC datetime."""
    return datetime.now(UTC)


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class SourceState(StrEnum):
    OK = "ok"
    ERROR = "error"
    TIMEOUT = "timeout"


@dataclass(frozen=True, slots=True)
class SourceStatus:
    """How reading one source of an observation went; a failed source is never read as healthy."""

    name: str
    state: SourceState
    reason: str = ""
    latency_ms: float | None = None

    @property
    def ok(self) -> bool:
        return self.state is SourceState.OK

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state.value,
            "reason": self.reason,
            "latency_ms": self.latency_ms,
        }


class SubjectState(Protocol):
    """The subject-specific part of an observation (nodes, stores, counters...)."""

    def to_dict(self) -> dict[str, Any]: ...

    def summary(self) -> str: ...


@dataclass(slots=True)
class Observation:
    """One look at the subject: per-source status plus the subject's typed state."""

    subject: str
    at: datetime
    sources: dict[str, SourceStatus]
    state: SubjectState

    @property
    def all_sources_ok(self) -> bool:
        return all(s.ok for s in self.sources.values())

    @property
    def failed_sources(self) -> list[SourceStatus]:
        return [s for s in self.sources.values() if not s.ok]

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "at": self.at.isoformat(),
            "sources": {k: v.to_dict() for k, v in self.sources.items()},
            "state": self.state.to_dict(),
        }


@dataclass(frozen=True, slots=True)
class Violation:
    """An invariant that does not hold for one target, with the numbers that show it."""

    invariant: str
    target: str
    severity: Severity
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def dedup_key(self) -> str:
        return f"{self.invariant}:{self.target}"


class Invariant(Protocol):
    """A property that must hold; it reports one violation per failing target."""

    name: str
    severity: Severity
    grace: int  # consecutive failing ticks before a ticket opens
    description: str

    @property
    def consequence_of(self) -> tuple[str, ...]:
        """Invariants whose violation can cause this one's (a dead store makes keys go over
        their limit): tickets of both, close in time, are one incident, worked at its cause."""
        ...

    def check(self, observation: Observation) -> list[Violation]: ...


class TicketState(StrEnum):
    OPEN = "open"
    INVESTIGATING = "investigating"
    ACTION_PENDING = "action_pending"
    RESOLVED = "resolved"
    ESCALATED = "escalated"
    # The symptom is gone because of a mitigation; the cause is still there.
    MITIGATED = "mitigated"
    # Its run ended (or its console died) before it was resolved.
    ABANDONED = "abandoned"

    @property
    def is_closed(self) -> bool:
        return self in (TicketState.RESOLVED, TicketState.ABANDONED)

    @property
    def is_active(self) -> bool:
        return self in (
            TicketState.OPEN,
            TicketState.INVESTIGATING,
            TicketState.ACTION_PENDING,
        )


@dataclass(frozen=True, slots=True)
class WorkloadSample:
    """One second of traffic as the subject's workload saw it: a value per series, per target."""

    at: datetime
    values: Mapping[str, float | None]
    per_target: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
