"""One ticket in full: what opened it, what the agent found, every step it took, what it proposed
and what the audit log says happened, read from the database."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from rich.text import Text
from sqlalchemy.engine import Engine
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.markup import escape
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Collapsible, DataTable, Footer, Header, Static
from textual.worker import Worker, WorkerState

from operator_console.db import TicketRow
from operator_console.db.models import ActionRow, TranscriptRow
from operator_console.db.tickets import Causes, cause_first
from operator_console.dossier import TicketDossier
from operator_console.scenarios.scoreboard import IncidentScore, Scoreboard, load_incident
from operator_console.tui.rows import sync_rows
from operator_console.tui.widgets.scoreboard import (
    STATE_TONES,
    cost_text,
    detected_text,
    diagnosed_text,
    outcome_text,
)

# Stored times as they are, never "x seconds ago": the same data always renders the same screen.
TIME_FORMAT = "%Y-%m-%d %H:%M:%S UTC"
LABEL_WIDTH = 18
PAYLOAD_CHARS = 80
ACTION_COLUMNS = ("id", "action", "params", "state", "risk", "error")
AUDIT_COLUMNS = ("id", "at", "kind", "actor", "action", "payload")
STATE_STYLES = {"resolved": "$success", "escalated": "$warning"}


def stamp(at: datetime | None) -> str:
    return at.astimezone(UTC).strftime(TIME_FORMAT) if at is not None else "-"


def _fields(pairs: Iterable[tuple[str, str | Content]]) -> Content:
    return Content("\n").join(
        Content.assemble((f"{label:<{LABEL_WIDTH}}", "bold"), value) for label, value in pairs
    )


def ticket_fields(ticket: TicketRow) -> Content:
    return _fields(
        [
            ("id", f"#{ticket.id}"),
            ("run", ticket.run_id or "-"),
            ("subject", ticket.subject),
            ("state", Content.styled(ticket.state, STATE_STYLES.get(ticket.state, "bold"))),
            ("severity", ticket.severity),
            ("invariant", ticket.invariant),
            ("target", ticket.target),
            ("occurrences", str(ticket.occurrences)),
            ("first seen", stamp(ticket.first_seen)),
            ("last seen", stamp(ticket.last_seen)),
            ("resolved at", stamp(ticket.resolved_at)),
            ("escalation reason", ticket.escalation_reason or "-"),
            ("message", ticket.message),
        ]
    )


def member_line(ticket: TicketRow, *, this: int, first: str | None) -> Content:
    """One ticket of the incident: which, on what, its state, and whether it is this one."""
    line = Content.assemble(
        (f"#{ticket.id} ", "bold"),
        f"{ticket.invariant} on {ticket.target} ",
        (ticket.state, STATE_STYLES.get(ticket.state, "$text-muted")),
    )
    notes = [note for note in (first, "this ticket" if ticket.id == this else None) if note]
    if notes:
        line += Content.styled(f"  ({', '.join(notes)})", "$text-muted")
    return line


def incident_fields(
    score: IncidentScore, members: Sequence[TicketRow] = (), *, this: int = 0, causes: bool = False
) -> Content:
    """The incident's tickets (its cause first) and scoreboard: detected, diagnosed, fixed after
    how long, and the cost."""
    tone = STATE_TONES.get(score.state, "bold")
    pairs: list[tuple[str, str | Content]] = [
        ("incident", f"#{score.incident_id}: {score.invariant} on {score.target}"),
        (
            "counted from",
            f"the fault: {score.fault}"
            if score.fault
            else "its first sighting (the fault's time is known only to the run's events)",
        ),
    ]
    pairs += [
        ("detected", detected_text(score)),
        ("diagnosed", diagnosed_text(score)),
        ("fixed", Content.styled(outcome_text(score), tone)),
    ]
    cost = cost_text(score)
    if cost is not None:
        pairs.append(("brain cost", cost))
    label = f"tickets ({len(members)})" if len(members) > 1 else "ticket"
    # Ordered cause first when the subject's invariants say which follows from which.
    lead = "the cause" if causes else "first seen"
    for index, ticket in enumerate(members):
        first = lead if index == 0 and len(members) > 1 else None
        pairs.append((label if index == 0 else "", member_line(ticket, this=this, first=first)))
    return _fields(pairs)


def diagnosis_fields(ticket: TicketRow) -> Content:
    diagnosis: dict[str, Any] = ticket.diagnosis or {}
    if not diagnosis:
        why = f"the agent escalated: {ticket.escalation_reason}" if ticket.escalation_reason else ""
        return Content.styled(f"no diagnosis {why or 'yet'}".strip(), "$text-muted")
    pairs: list[tuple[str, str | Content]] = [
        ("brain", ticket.brain or "-"),
        ("confidence", str(diagnosis.get("confidence", "-"))),
        ("summary", str(diagnosis.get("summary", ""))),
        ("root cause", Content.styled(str(diagnosis.get("root_cause", "")), "bold")),
    ]
    for item in diagnosis.get("evidence") or []:
        claim = Content.assemble(
            str(item.get("claim", "")), (f"  [{item.get('tool_use_id', '')}]", "$text-muted")
        )
        if item.get("excerpt"):
            claim += Content.styled(f"  “{item['excerpt']}”", "italic")
        pairs.append(("evidence", claim))
    for alt in diagnosis.get("alternatives") or []:
        pairs.append(
            (
                "ruled out",
                Content.assemble(
                    str(alt.get("hypothesis", "")),
                    (f"  because {alt.get('rejected_because', '')}", "$text-muted"),
                ),
            )
        )
    for rec in diagnosis.get("recommended") or []:
        line = Content.assemble(
            (str(rec.get("action", "")), "bold"),
            f" {json.dumps(rec.get('params') or {}, default=str)}",
        )
        if rec.get("reason"):
            line += Content.styled(f"  {rec['reason']}", "$text-muted")
        pairs.append(("recommended", line))
    pairs.append(("risk", str(diagnosis.get("risk", "-"))))
    return _fields(pairs)


def step_line(step: TranscriptRow) -> Content:
    """One line for a reasoning step or a tool call (tool results are collapsibles)."""
    line = Content.assemble((f"{step.seq:>3} ", "$text-muted"), (f"{step.kind:<12}", "bold"))
    if step.is_error:
        line += Content.styled("ERROR ", "bold")
    if step.kind == "tool_call":
        return line + Content.assemble(
            (step.tool or "?", "$accent"),
            f"({json.dumps(step.input or {}, default=str)})",
            (f"  {step.tool_use_id or ''}", "$text-muted"),
        )
    return line + Content(step.text.strip())


def result_title(step: TranscriptRow) -> str:
    """A tool result's one-line title (markup-escaped: a Collapsible parses its title)."""
    size = f"{len(step.text)} chars"
    if step.full_size is not None:
        size = f"{size} of {step.full_size}"
    error = " ERROR" if step.is_error else ""
    return escape(
        f"{step.seq:>3} tool_result{error} {step.tool or '?'} {step.tool_use_id} · {size}"
    )


def action_cells(action: ActionRow) -> tuple[Text, ...]:
    # Text, not str: a DataTable parses str cells as markup, and this data is not ours.
    return tuple(
        Text(value)
        for value in (
            str(action.id),
            action.name,
            json.dumps(action.params, default=str),
            action.state,
            action.risk,
            action.error or "",
        )
    )


class TicketDetailScreen(Screen[None]):
    """Everything on record about one ticket; escape goes back, g reads it again."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("g", "reload", "Reload"),
    ]

    def __init__(
        self,
        engine: Engine,
        ticket_id: int,
        *,
        scoreboard: Scoreboard | None = None,
        causes: Causes | None = None,
    ) -> None:
        super().__init__()
        self.engine = engine
        self.ticket_id = ticket_id
        self.causes = causes
        # The run's live scoreboard when opened from its dashboard; else read from the rows.
        self.scoreboard = scoreboard
        self.dossier: TicketDossier | None = None
        self.incident: IncidentScore | None = None
        self.incident_tickets: list[TicketRow] = []
        self._shown_steps: set[int | None] = set()
        self.sub_title = f"ticket #{ticket_id}"

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="detail"):
            yield Static(f"Ticket #{self.ticket_id}", classes="detail-section")
            yield Static("loading…", id="detail-ticket", classes="detail-fields")
            yield Static("Incident", classes="detail-section")
            yield Static("", id="detail-incident", classes="detail-fields")
            yield Static("Diagnosis", classes="detail-section")
            yield Static("", id="detail-diagnosis", classes="detail-fields")
            yield Static("Transcript", id="detail-transcript-title", classes="detail-section")
            yield Vertical(id="detail-transcript")
            yield Static("Actions", id="detail-actions-title", classes="detail-section")
            yield DataTable(id="detail-actions", cursor_type="row", classes="detail-table")
            yield Static("Audit log", id="detail-audit-title", classes="detail-section")
            yield DataTable(id="detail-audit", cursor_type="row", classes="detail-table")
        yield Footer()

    def on_mount(self) -> None:
        for table_id, columns in (
            ("#detail-actions", ACTION_COLUMNS),
            ("#detail-audit", AUDIT_COLUMNS),
        ):
            table: DataTable[Any] = self.query_one(table_id, DataTable)
            for column in columns:
                table.add_column(column, key=column)
        self.action_reload()

    def action_reload(self) -> None:
        self._load()

    def _read(self) -> tuple[TicketDossier, list[TicketRow], IncidentScore] | None:
        dossier = TicketDossier.load(self.engine, self.ticket_id)
        if dossier is None:
            return None
        tickets, score = load_incident(self.engine, dossier.ticket)
        live = self.scoreboard.for_ticket(self.ticket_id) if self.scoreboard else None
        return dossier, cause_first(tickets, self.causes), live or score

    @work(exclusive=True, group="records", exit_on_error=False)
    async def _load(self) -> None:
        found = await asyncio.to_thread(self._read)
        with self.app.batch_update():
            if found is None:
                self.query_one("#detail-ticket", Static).update(
                    Content.styled(f"no ticket {self.ticket_id} in this database", "$error")
                )
                return
            dossier, self.incident_tickets, self.incident = found
            self.dossier = dossier
            self.query_one("#detail-ticket", Static).update(ticket_fields(dossier.ticket))
            self.query_one("#detail-incident", Static).update(
                incident_fields(
                    self.incident,
                    self.incident_tickets,
                    this=self.ticket_id,
                    causes=bool(self.causes),
                )
            )
            self.query_one("#detail-diagnosis", Static).update(diagnosis_fields(dossier.ticket))
            self._show_transcript(dossier.transcript)
            self._show_actions(dossier.actions)
            self._show_audit(dossier)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group == "records" and event.state is WorkerState.ERROR:
            self.notify(
                f"could not read ticket {self.ticket_id}: {event.worker.error}",
                title="Ticket detail",
                severity="error",
            )

    def _show_transcript(self, steps: tuple[TranscriptRow, ...]) -> None:
        """Transcript rows are append-only: mount the steps not shown yet, keep the rest as is."""
        brain = f", brain {steps[0].brain}" if steps else ""
        self.query_one("#detail-transcript-title", Static).update(
            f"Transcript ({len(steps)} steps{brain})"
        )
        container = self.query_one("#detail-transcript", Vertical)
        new: list[Widget] = []
        for step in steps:
            if step.id in self._shown_steps:
                continue
            self._shown_steps.add(step.id)
            step_id = f"step-{step.id}"
            error = "-error" if step.is_error else ""
            if step.kind == "tool_result":
                body = Static(Content(step.text), classes="detail-result-text")
                new.append(
                    Collapsible(
                        body,
                        title=result_title(step),
                        collapsed=True,
                        id=step_id,
                        classes=f"detail-result {error}",
                    )
                )
            else:
                new.append(Static(step_line(step), id=step_id, classes=f"detail-step {error}"))
        empty = container.query(".detail-empty")
        if steps:
            empty.remove()
        elif not empty:
            new.append(Static("no steps recorded", classes="detail-empty"))
        if new:
            container.mount_all(new)

    def _show_actions(self, actions: tuple[ActionRow, ...]) -> None:
        self.query_one("#detail-actions-title", Static).update(f"Actions ({len(actions)})")
        table: DataTable[Any] = self.query_one("#detail-actions", DataTable)
        sync_rows(table, ACTION_COLUMNS, [(str(a.id), action_cells(a)) for a in actions])

    def _show_audit(self, dossier: TicketDossier) -> None:
        self.query_one("#detail-audit-title", Static).update(
            f"Audit log ({len(dossier.audit)} rows)"
        )
        rows = [
            (
                str(row.id),
                tuple(
                    Text(value)
                    for value in (
                        str(row.id),
                        f"{row.at.astimezone(UTC):%H:%M:%S}",
                        row.kind,
                        row.actor,
                        str(row.action_id or ""),
                        json.dumps(row.payload, default=str, ensure_ascii=False)[:PAYLOAD_CHARS],
                    )
                ),
            )
            for row in dossier.audit
        ]
        sync_rows(self.query_one("#detail-audit", DataTable), AUDIT_COLUMNS, rows)
