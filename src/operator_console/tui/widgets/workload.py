"""The workload panel: per-second sparklines of what the clients saw."""

from __future__ import annotations

from collections import deque
from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Label, Sparkline

HISTORY = 120
P99_ALARM_MS = 250.0
SERIES = (
    ("offered", "offered/s"),
    ("allowed", "allowed/s"),
    ("denied", "denied/s"),
    ("errors", "errors/s"),
    ("p99_ms", "p99 ms"),
)


class WorkloadPanel(Vertical):
    """Offered, allowed, denied, errors and p99 over the last two minutes."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.border_title = "Workload"
        self.history: dict[str, deque[float]] = {k: deque(maxlen=HISTORY) for k, _ in SERIES}
        self._last: dict[str, Any] = {}

    def compose(self) -> ComposeResult:
        for key, label in SERIES:
            with Horizontal(classes="series", id=f"series-{key.replace('_', '-')}"):
                yield Label(label, classes="series-name")
                yield Sparkline([], summary_function=max, classes="series-line")
                yield Label("-", classes="series-value")

    def add_sample(self, fields: dict[str, Any]) -> None:
        """Record one workload_sample event and draw it."""
        self.record(fields)
        self.redraw()

    def record(self, fields: dict[str, Any]) -> None:
        """Keep one workload_sample event without drawing (the panel may be covered)."""
        self._last = fields
        for key, _ in SERIES:
            value = fields.get(key)
            self.history[key].append(float(value) if isinstance(value, int | float) else 0.0)

    def redraw(self) -> None:
        """Show the recorded history; reassigning `.data` is what refreshes a Sparkline."""
        fields = self._last
        p99 = fields.get("p99_ms")
        errors = int(fields.get("errors") or 0)
        alarm = errors > 0 or (isinstance(p99, int | float) and p99 > P99_ALARM_MS)
        self.set_class(alarm, "-error")
        for key, _ in SERIES:
            value = fields.get(key)
            number = float(value) if isinstance(value, int | float) else 0.0
            row = self.query_one(f"#series-{key.replace('_', '-')}", Horizontal)
            row.query_one(Sparkline).data = list(self.history[key])
            text = (
                "-" if value is None else (f"{number:.0f}" if key != "p99_ms" else f"{number:.1f}")
            )
            row.query_one(".series-value", Label).update(text)
            if key == "errors":
                row.set_class(errors > 0, "-error")
            elif key == "p99_ms":
                row.set_class(alarm and number > P99_ALARM_MS, "-error")
