"""Plain types every layer shares: observations, violations, tickets, events and the bus."""

from operator_console.domain.model import (
    Invariant,
    Observation,
    Severity,
    SourceState,
    SourceStatus,
    SubjectState,
    TicketState,
    Violation,
    WorkloadSample,
    utcnow,
)

__all__ = [
    "Invariant",
    "Observation",
    "Severity",
    "SourceState",
    "SourceStatus",
    "SubjectState",
    "TicketState",
    "Violation",
    "WorkloadSample",
    "utcnow",
]
