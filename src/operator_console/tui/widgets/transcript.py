"""The agent panel: the brain's reasoning, tool calls and diagnosis as they stream."""

from __future__ import annotations

import json
import re
from typing import Any

from rich.markup import escape
from textual.widgets import RichLog

RESULT_CHARS = 160
ACTION_VERBS = {
    "action_proposed": "proposed",
    "action_approved": "approved",
    "action_rejected": "rejected",
    "action_expired": "expired",
    "action_cancelled": "cancelled",
    "action_executing": "executing",
    "action_succeeded": "succeeded",
    "action_failed": "failed",
    "action_verified": "verified",
    "action_not_verified": "NOT verified",
    "action_invalid": "refused",
    "action_interrupted": "interrupted",
}


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

    def show(self, name: str, f: dict[str, Any]) -> None:
        """Render one agent or action event; other events are ignored."""
        match name:
            case "agent_ready":
                self.say(f"[b]brain:[/] {escape(str(f.get('why')))} · mode [b]{f.get('mode')}[/]")
            case "agent_started":
                self.say(
                    f"\n[b]{escape(str(f.get('brain')))}[/] investigates ticket "
                    f"#{f.get('ticket_id')} ({escape(str(f.get('invariant')))} "
                    f"on {escape(str(f.get('target')))})"
                )
            case "agent_step":
                self._step(f)
            case "diagnosis_ready":
                self._diagnosis(f)
            case "ticket_escalated":
                self.say(
                    f"[$warning]escalated #{f.get('ticket_id')}: {escape(str(f.get('reason')))}[/]"
                )
            case "mode_changed":
                self.say(f"mode [b]{f.get('mode')}[/] (was {f.get('previous')})")
            case "kill_switch":
                self.say(f"[$error b]KILL SWITCH {'ON' if f.get('on') else 'off'}[/]")
            case _ if name in ACTION_VERBS:
                self._action(name, f)

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
        self.say(
            f"[b $success]diagnosis #{f.get('ticket_id')}[/] (confidence {f.get('confidence')}): "
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

    def _action(self, name: str, f: dict[str, Any]) -> None:
        verb = ACTION_VERBS[name]
        tone = (
            "$error"
            if name in ("action_failed", "action_not_verified", "action_invalid")
            else "$primary"
        )
        detail = f.get("error") or f.get("detail") or f.get("result") or ""
        by = f" by {f.get('by')}" if f.get("by") else ""
        params = json.dumps(f.get("params") or {}, default=str)
        line = (
            f"[{tone}]action {f.get('action_id', '')} {escape(str(f.get('action')))} "
            f"{escape(params)} {verb}{escape(by)}[/]"
        )
        if detail:
            line += f" - {escape(shorten(str(detail)))}"
        self.say(line)
