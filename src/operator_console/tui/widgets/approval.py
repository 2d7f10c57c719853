"""Dialogs: approve or reject a proposed action, and the reason for a rejection."""

from __future__ import annotations

import json
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

MAX_EVIDENCE = 4


class ApprovalModal(ModalScreen[bool]):
    """The agent wants to act: the person decides (True approves, False rejects)."""

    BINDINGS = [
        Binding("a", "decide(True)", "Approve"),
        Binding("r", "decide(False)", "Reject"),
        Binding("escape", "decide(False)", "Reject"),
    ]

    def __init__(self, action: dict[str, Any], diagnosis: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.action = action
        self.diagnosis = diagnosis or {}

    def _body(self) -> Text:
        a, d = self.action, self.diagnosis
        body = Text()
        body.append(f"{a.get('action')} ", style="bold")
        body.append(json.dumps(a.get("params") or {}))
        body.append(f"\nrisk: {a.get('risk')}   ticket: #{a.get('ticket_id')}\n")
        body.append(f"reason: {a.get('reason') or '-'}\n")
        if a.get("why"):
            body.append("waits for you: ", style="bold")
            body.append(f"{a.get('why')}\n")
        if d:
            confidence = d.get("confidence")
            sure = f" (confidence {confidence:.0%})" if isinstance(confidence, int | float) else ""
            body.append(f"\nroot cause{sure}: ", style="bold")
            body.append(str(d.get("root_cause") or d.get("summary") or "-"))
            for item in (d.get("evidence") or [])[:MAX_EVIDENCE]:
                body.append(f"\n  evidence: {item.get('claim', '')}")
            ruled_out = len(d.get("alternatives") or [])
            if ruled_out:
                body.append(f"\n  {ruled_out} other explanation(s) ruled out; see the transcript")
        else:
            body.append("\nno diagnosis recorded for this ticket")
        return body

    def compose(self) -> ComposeResult:
        a = self.action
        with Vertical(id="approval-dialog"):
            yield Label(f"[b]Approve action {a.get('action_id')}?[/]", id="approval-title")
            yield Static(self._body(), id="approval-body")
            with Horizontal(id="approval-buttons"):
                yield Button("Approve", variant="success", id="approve")
                yield Button("Reject", variant="error", id="reject")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "approve")

    def action_decide(self, approve: bool) -> None:
        self.dismiss(approve)


class ReasonModal(ModalScreen[str | None]):
    """A short reason for a rejection (None when the person changes their mind)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, action_label: str) -> None:
        super().__init__()
        self.action_label = action_label

    def compose(self) -> ComposeResult:
        with Vertical(id="reason-dialog"):
            yield Label(f"Reject {self.action_label}: why?")
            yield Input(placeholder="reason (enter to reject, escape to cancel)", id="reason")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or "rejected in the console")

    def action_cancel(self) -> None:
        self.dismiss(None)
