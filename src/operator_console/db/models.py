"""Tables. Times are stored and returned as timezone-aware UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, TypeDecorator
from sqlmodel import Field, SQLModel

from operator_console.domain import utcnow


class UTCDateTime(TypeDecorator[datetime]):
    """A DateTime that refuses naive values and always hands back aware UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class RunRow(SQLModel, table=True):
    """One run of a scenario (headless or in the console)."""

    __tablename__ = "runs"

    id: str = Field(primary_key=True, max_length=32)
    scenario: str = Field(index=True)
    subject: str
    run_dir: str = ""
    # Which process ran it, so a console that finds it unfinished can tell whether it died.
    host: str = ""
    pid: int | None = None
    started_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime()))
    finished_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    ok: bool | None = None
    summary: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))


class TicketRow(SQLModel, table=True):
    """A violation that persisted past its grace; deduplicated by invariant and target."""

    __tablename__ = "tickets"

    id: int | None = Field(default=None, primary_key=True)
    run_id: str | None = Field(default=None, index=True)
    subject: str
    dedup_key: str = Field(index=True)
    invariant: str = Field(index=True)
    target: str
    severity: str
    state: str = Field(index=True)
    message: str
    occurrences: int = 1
    first_seen: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime()))
    last_seen: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime()))
    resolved_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    held_by: str | None = None
    escalation_reason: str | None = None
    # The incident it belongs to: the id of the incident's first ticket (its own when first).
    incident_id: int | None = Field(default=None, index=True)
    # Opened shortly after the agent acted on this target: a person decides what happens.
    after_action_id: int | None = None
    # A verified mitigation: the action that hid the symptom, the cause it left, and what remains.
    mitigation_action_id: int | None = None
    cause: str | None = None
    remains: str | None = None
    closed_reason: str | None = None
    brain: str | None = None
    diagnosis: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    details: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    opened_observation: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))

    def event_fields(self) -> dict[str, Any]:
        """What every ticket_* event on the bus says about the ticket."""
        return {
            "ticket_id": self.id,
            "invariant": self.invariant,
            "target": self.target,
            "severity": self.severity,
            "state": self.state,
            "occurrences": self.occurrences,
            "message": self.message,
            "first_seen": self.first_seen.isoformat() if self.first_seen else None,
            "after_action_id": self.after_action_id,
            "incident_id": self.incident_id,
            "remains": self.remains,
        }

    def to_dict(self, *, with_observation: bool = False) -> dict[str, Any]:
        data = self.model_dump(exclude={"opened_observation"})
        for key in ("first_seen", "last_seen", "resolved_at"):
            value = data.get(key)
            data[key] = value.isoformat() if value else None
        if with_observation:
            data["opened_observation"] = self.opened_observation
        return data


class TranscriptRow(SQLModel, table=True):
    """One step of an agent's investigation of a ticket, stored as it happens."""

    __tablename__ = "transcript"

    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(index=True)
    seq: int
    brain: str
    kind: str
    text: str = ""
    tool: str | None = None
    tool_use_id: str | None = None
    input: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    is_error: bool = False
    full_size: int | None = None
    at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime()))


class ActionRow(SQLModel, table=True):
    """A proposed action and everything that happened to it."""

    __tablename__ = "actions"

    id: int | None = Field(default=None, primary_key=True)
    run_id: str | None = Field(default=None, index=True)
    ticket_id: int | None = Field(default=None, index=True)
    name: str
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    params_hash: str
    risk: str
    restores: str = ""  # the ticket's dedup key this action is meant to clear
    reason: str = ""
    targets: list[str] = Field(default_factory=list, sa_column=Column(JSON))
    # Which system the targets belong to (a run's own lab, or an attached cluster's address):
    # the blast radius counts actions on the same system only.
    system: str = Field(default="", index=True)
    decision: str = ""  # what the policy decided: execute, await_approval, propose_only
    policy_reason: str = ""  # why, in words a person reads
    proposed_by: str
    state: str = Field(index=True)
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime()))
    expires_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    decided_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    decided_by: str | None = None
    decision_reason: str | None = None
    attempts: int = 0
    result: str | None = None
    error: str | None = None
    finished_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    # A chain's steps, each with its own state ("pending", "executing", "succeeded",
    # "failed", "undone", "undo_failed", "skipped", "cancelled"); None for a single action.
    steps: list[dict[str, Any]] | None = Field(default=None, sa_column=Column(JSON))
    # An approval for later (`actions approve --at/--after`, or a maintenance window).
    scheduled_for: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))

    def to_dict(self) -> dict[str, Any]:
        data = self.model_dump()
        for key, value in data.items():
            if isinstance(value, datetime):
                data[key] = value.isoformat()
        return data


class ApprovalRow(SQLModel, table=True):
    """A single-use permission to run one action with exactly these parameters."""

    __tablename__ = "approvals"

    id: int | None = Field(default=None, primary_key=True)
    action_id: int = Field(index=True)
    params_hash: str
    approved_by: str
    reason: str = ""
    created_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime()))
    expires_at: datetime = Field(sa_column=Column(UTCDateTime()))
    used_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))


class ControlRow(SQLModel, table=True):
    """Persisted switches: the operating mode and the kill switch."""

    __tablename__ = "controls"

    key: str = Field(primary_key=True)
    value: str
    changed_by: str = ""
    changed_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime()))


class AuditRow(SQLModel, table=True):
    """One thing that happened, who did it, and the hash that ties it to everything before it."""

    __tablename__ = "audit"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    kind: str = Field(index=True)
    actor: str
    run_id: str | None = Field(default=None, index=True)
    ticket_id: int | None = Field(default=None, index=True)
    action_id: int | None = None
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # One line for lists; sealed by the hash when non-empty (rows before summaries had none).
    summary: str = ""
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "kind": self.kind,
            "actor": self.actor,
            "run_id": self.run_id,
            "ticket_id": self.ticket_id,
            "action_id": self.action_id,
            "payload": self.payload,
            "summary": self.summary,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


class EvalCampaignRow(SQLModel, table=True):
    """One eval campaign: what it ran (scenarios, brains, trials, mode) and its table."""

    __tablename__ = "eval_campaigns"

    id: str = Field(primary_key=True, max_length=40)
    name: str = Field(index=True)
    started_at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime()))
    finished_at: datetime | None = Field(default=None, sa_column=Column(UTCDateTime()))
    interrupted: bool = False
    spec: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    cells: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON))


class EvalRunRow(SQLModel, table=True):
    """One scored trial of a campaign."""

    __tablename__ = "eval_runs"

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: str = Field(index=True)
    scenario: str = Field(index=True)
    brain: str
    trial: int
    run_id: str
    win: bool
    at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime()))
    score: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
