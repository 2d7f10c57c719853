"""The scoreboard: per incident of the run, detected, diagnosed and fixed after how many seconds,
and what the brain cost; the times come from the core's Scoreboard, this only words them."""

from __future__ import annotations

from textual.containers import VerticalScroll
from textual.content import Content
from textual.widgets import Static

from operator_console.scenarios.scoreboard import SINCE_FAULT, IncidentScore

# Theme variables per state of an incident.
STATE_TONES = {
    "open": "$error",
    "diagnosed": "$warning",
    "escalated": "$error",
    "abandoned": "$text-muted",
    "mitigated": "$warning",
    "fixed": "$success",
    "resolved": "$success",
}


def seconds(value: float) -> str:
    return f"{value:.2f} s" if value < 100 else f"{value:.0f} s"


def detected_text(score: IncidentScore) -> str:
    if score.detected_s is None:
        return "- (no fault on record to count from)"
    return f"after {seconds(score.detected_s)}"


def diagnosed_text(score: IncidentScore) -> str:
    if score.diagnosed_s is None:
        return "not yet" if score.state not in ("resolved", "abandoned") else "never"
    by = f" by {score.brain}" if score.brain else ""
    return f"after {seconds(score.diagnosed_s)}{by}"


def outcome_text(score: IncidentScore) -> str:
    """How the incident ended (or stands): fixed and verified, mitigated, cleared, or not yet."""
    action = f" ({score.action})" if score.action else ""
    if score.fixed_s is not None:
        return f"fixed and verified after {seconds(score.fixed_s)}{action}"
    if score.mitigated_s is not None:
        text = f"mitigated after {seconds(score.mitigated_s)}{action}"
        if score.resolved_s is not None:
            text += f", cause gone after {seconds(score.resolved_s)}"
        return text
    if score.resolved_s is not None:
        return f"cleared without an action after {seconds(score.resolved_s)}"
    if score.state == "escalated":
        return "handed to a person"
    if score.state == "abandoned":
        return "not fixed when the run ended"
    return "not fixed yet"


def cost_text(score: IncidentScore) -> str | None:
    """Tokens and cost when a model spoke (the offline brain costs nothing)."""
    if not score.tokens and not score.cost_usd:
        return None
    return f"{score.tokens:,} tokens, ${score.cost_usd:.4f}"


def since_text(scores: list[IncidentScore]) -> str:
    """What the times count from: the fault, or (no fault on record) the first sighting."""
    kinds = {score.since for score in scores}
    if kinds == {SINCE_FAULT}:
        return "seconds since the fault"
    if SINCE_FAULT in kinds:
        return "seconds since the fault, or since first seen"
    return "seconds since first seen"


def incident_line(score: IncidentScore) -> Content:
    """An incident in two or three short lines for the dashboard."""
    tone = STATE_TONES.get(score.state, "$text-muted")
    head = Content.assemble(
        (f"#{score.incident_id} ", "bold"),
        (f"{score.invariant} on {score.target}", f"bold {tone}"),
    )
    if len(score.tickets) > 1:
        head += Content.styled(f"  {len(score.tickets)} tickets", "$text-muted")
    if score.fault:
        head += Content.styled(f"  fault: {score.fault}", "$text-muted")
    detected = f"detected {seconds(score.detected_s)}" if score.detected_s is not None else "seen"
    diagnosed = (
        f"diagnosed {seconds(score.diagnosed_s)}"
        if score.diagnosed_s is not None
        else "diagnosing…"
    )
    parts = [Content(detected), Content(diagnosed), Content.styled(outcome_text(score), tone)]
    body = Content.assemble("  ", Content(" · ").join(parts))
    lines = [head, body]
    cost = cost_text(score)
    if cost is not None:
        lines.append(Content.styled(f"  {score.brain or 'brain'}: {cost}", "$text-muted"))
    return Content("\n").join(lines)


class ScoreboardPanel(VerticalScroll):
    """One entry per incident, updated in place; hidden until the run has an incident."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.border_title = "Scoreboard"
        self.scores: dict[int, IncidentScore] = {}

    def on_mount(self) -> None:
        self.display = False

    def show(self, score: IncidentScore) -> None:
        """Draw (or redraw) one incident's entry."""
        self.scores[score.incident_id] = score
        key = f"incident-{score.incident_id}"
        found = self.query(f"#{key}")
        if found:
            found.first(Static).update(incident_line(score))
        else:
            self.mount(Static(incident_line(score), id=key, classes="incident"))
        self.border_subtitle = since_text(list(self.scores.values()))
        self.display = True
