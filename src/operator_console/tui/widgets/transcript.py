"""The agent panel: the brain's reasoning, tool calls and diagnosis as they stream."""

from __future__ import annotations

import json
import re
from typing import Any

from rich.markup import escape
from textual.widgets import RichLog

from operator_console.domain import events as ev

RESULT_CHARS = 160
ACTION_VERBS: dict[type[ev.Event], str] = {
    ev.ActionProposed: "proposed",
    ev.ActionApproved: "approved",
    ev.ActionRejected: "rejected",
    ev.ActionExpired: "expired",
    ev.ActionCancelled: "cancelled",
    ev.ActionExecuting: "executing",
    ev.ActionSucceeded: "succeeded",
    ev.ActionFailed: "failed",
    ev.ActionVerified: "verified",
    ev.ActionNotVerified: "NOT verified",
    ev.ActionInvalid: "refused",
    ev.ActionInterrupted: "interrupted",
}
TROUBLE = (ev.ActionFailed, ev.ActionNotVerified, ev.ActionInvalid)


THEME_COLOUR = re.compile(r"\$([a-z-]+)")


def shorten(text: str, limit: int = RESULT_CHARS) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class Transcript(RichLog):
    """Append-only; follows new lines only while the reader is already at the bottom."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(
            id=id, wrap=True, markup=True, auto_scroll=False, max_lines=2000, min_width=20
        )
        self.border_title = "Agent"
        self._following = False

    def say(self, markup: str) -> None:
        """Write one line; `$error`-style theme variables in tags become the theme's colours."""
        colours = self.app.get_css_variables()
        resolved = THEME_COLOUR.sub(lambda m: colours.get(m.group(1), m.group(0)), markup)
        # A scroll to the end requested by the previous line lands only after the next refresh.
        follow = self._following or self.is_vertical_scroll_end or self.max_scroll_y == 0
        self.write(resolved, scroll_end=follow)
        if follow and not self._following:
            self._following = True
            self.call_after_refresh(self._settled)

    def _settled(self) -> None:
        self._following = False

    def show(self, event: ev.Event) -> None:
        """Render one agent or action event; other events are ignored."""
        match event:
            case ev.AgentReady():
                self.say(f"[b]brain:[/] {escape(event.why)} · mode [b]{event.mode}[/]")
            case ev.AgentStarted():
                self.say(
                    f"\n[b]{escape(event.brain)}[/] investigates ticket "
                    f"#{event.ticket_id} ({escape(event.invariant)} on {escape(event.target)})"
                )
            case ev.AgentStep():
                self._step(event.fields())
            case ev.DiagnosisReady():
                self._diagnosis(event.fields())
            case ev.TicketEscalated():
                self.say(f"[$warning]escalated #{event.ticket_id}: {escape(event.reason)}[/]")
            case ev.TicketMitigated():
                self.say(
                    f"[$warning]mitigated #{event.ticket_id}: {escape(event.remains or '')}[/]"
                )
            case ev.CauseCleared():
                self.say(f"cause cleared on #{event.ticket_id}: {escape(event.detail)}")
            case ev.TicketAbandoned():
                self.say(f"[dim]abandoned #{event.ticket_id}: {escape(event.reason)}[/]")
            case ev.ModeChanged():
                self.say(f"mode [b]{event.mode}[/] (was {event.previous})")
            case ev.KillSwitch():
                self.say(f"[$error b]KILL SWITCH {'ON' if event.on else 'off'}[/]")
            case _ if type(event) in ACTION_VERBS:
                self._action(event)

    def _step(self, f: dict[str, Any]) -> None:
        kind = f.get("kind")
        if kind == "tool_call":
            args = json.dumps(f.get("input") or {}, default=str)
            self.say(f"  [$accent]→ {escape(str(f.get('tool')))}[/]({escape(shorten(args))})")
        elif kind == "tool_result":
            tone = "$error" if f.get("is_error") else "dim"
            self.say(f"  [{tone}]← {escape(shorten(str(f.get('text', ''))))}[/]")
        else:
            self.say(f"  {escape(str(f.get('text', '')).strip())}")

    def _diagnosis(self, f: dict[str, Any]) -> None:
        confidence = f.get("confidence")
        sure = f"confidence {confidence:.0%}" if isinstance(confidence, int | float) else "-"
        self.say(
            f"[b $success]diagnosis #{f.get('ticket_id')}[/] ({sure}): "
            f"{escape(str(f.get('root_cause')))}"
        )
        for item in f.get("evidence") or []:
            self.say(f"  evidence: {escape(shorten(str(item.get('claim', item))))}")
        for alt in f.get("alternatives") or []:
            self.say(
                f"  ruled out: {escape(str(alt.get('hypothesis')))} "
                f"({escape(shorten(str(alt.get('rejected_because', ''))))})"
            )
        for rec in f.get("recommended") or []:
            params = json.dumps(rec.get("params") or {})
            self.say(f"  recommends: [b]{escape(str(rec.get('action')))}[/] {escape(params)}")

    def _action(self, event: ev.Event) -> None:
        verb = ACTION_VERBS[type(event)]
        f = event.fields()
        tone = "$error" if isinstance(event, TROUBLE) else "$primary"
        detail = f.get("error") or f.get("detail") or f.get("result") or ""
        if isinstance(event, ev.ActionProposed) and event.decision:
            detail = event.why
        by = f" by {f.get('by')}" if f.get("by") else ""
        params = json.dumps(f.get("params") or {}, default=str)
        line = (
            f"[{tone}]action {f.get('action_id', '')} {escape(str(f.get('action')))} "
            f"{escape(params)} {verb}{escape(by)}[/]"
        )
        if detail:
            line += f" - {escape(shorten(str(detail)))}"
        self.say(line)
