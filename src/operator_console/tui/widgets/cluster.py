"""The cluster panel: one keyed row per node and one for the store, updated in place."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static

COLUMNS = ("target", "state", "health", "share", "ticket")
TROUBLE = {"down": "error", "unreachable": "error", "paused": "warning", "degraded": "warning"}


def _latency(value: Any) -> str:
    return f"{value:.1f} ms" if isinstance(value, int | float) else "-"


def node_shares(workload: dict[str, Any] | None) -> dict[str, float]:
    """Each target's share of the offered load, from the observation's workload per_target."""
    per_target = (workload or {}).get("per_target") or {}
    offered = {name: float(stats.get("offered") or 0) for name, stats in per_target.items()}
    total = sum(offered.values())
    return {name: (value / total if total else 0.0) for name, value in offered.items()}


class ClusterPanel(Vertical):
    """Nodes and store as the last observation saw them; a row an open ticket names is flagged."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.border_title = "Cluster"
        self._tickets: dict[str, str] = {}
        self._last: dict[str, Any] | None = None

    def compose(self) -> ComposeResult:
        table: DataTable[Any] = DataTable(id="cluster-table", cursor_type="row", zebra_stripes=True)
        yield table
        yield Static("waiting for the cluster to start...", id="cluster-note")

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for column in COLUMNS:
            table.add_column(column, key=column)

    def _styled(self, state: str) -> Text:
        tone = TROUBLE.get(state)
        if tone is None and state != "up":
            return Text(state, style="dim")
        colour = self.app.get_css_variables().get(tone or "success", "")
        return Text(state, style=f"bold {colour}".strip())

    def _set_row(self, key: str, values: dict[str, Any]) -> None:
        table = self.query_one(DataTable)
        if key not in table.rows:
            table.add_row(*(values[c] for c in COLUMNS), key=key)
            return
        for column in COLUMNS[1:]:
            table.update_cell(key, column, values[column], update_width=True)

    def show_state(self, state: dict[str, Any]) -> None:
        """Apply one observation's subject state (RateLimiterState.to_dict)."""
        self._last = state
        nodes: dict[str, Any] = state.get("nodes") or {}
        store: dict[str, Any] = state.get("store") or {}
        shares = node_shares(state.get("workload"))
        states: list[str] = []
        for name, node in nodes.items():
            node_state = str(node.get("state", "?"))
            states.append(node_state)
            self._set_row(
                name,
                {
                    "target": name,
                    "state": self._styled(node_state),
                    "health": _latency(node.get("health_latency_ms")),
                    "share": f"{shares.get(name, 0.0):.0%}",
                    "ticket": self._ticket_cell(name),
                },
            )
        if store:
            store_state = str(store.get("state", "?"))
            states.append(store_state)
            self._set_row(
                "store",
                {
                    "target": "store",
                    "state": self._styled(store_state),
                    "health": _latency(store.get("latency_ms")),
                    "share": "-",
                    "ticket": self._ticket_cell("store"),
                },
            )
        self.set_class(any(s in ("down", "unreachable") for s in states), "-down")
        self.set_class("paused" in states, "-paused")
        note = self.query_one("#cluster-note", Static)
        note.update(f"{len(nodes)} nodes, store {store.get('state', '?')}")

    def _ticket_cell(self, target: str) -> Text:
        label = self._tickets.get(target)
        if not label:
            return Text("")
        colour = self.app.get_css_variables().get("warning", "")
        return Text(label, style=f"bold {colour}".strip())

    def flag(self, target: str, label: str | None) -> None:
        """Mark (or clear, with None) the open ticket that names `target`."""
        if label is None:
            self._tickets.pop(target, None)
        else:
            self._tickets[target] = label
        table = self.query_one(DataTable)
        if target in table.rows:
            table.update_cell(target, "ticket", self._ticket_cell(target), update_width=True)
