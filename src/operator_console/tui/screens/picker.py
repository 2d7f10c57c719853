"""The scenario picker: every scenario, which brain will speak, and the persisted mode."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Engine
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from operator_console.actions.store import Controls, Mode
from operator_console.scenarios import list_scenarios
from operator_console.scenarios.model import Scenario
from operator_console.settings import Settings
from operator_console.tui.screens.evals import EvalsScreen


def brain_preview(settings: Settings) -> str:
    """The same rule as agent.select.choose_brain, without building the brain."""
    key = settings.anthropic_api_key.get_secret_value() if settings.anthropic_api_key else None
    claude_available = bool(key or settings.anthropic_base_url)
    if settings.brain == "rules":
        return "offline rules brain (chosen in settings)"
    if not claude_available:
        return "offline rules brain (no ANTHROPIC_API_KEY set)"
    where = f" at {settings.anthropic_base_url}" if settings.anthropic_base_url else ""
    return f"Claude {settings.model}{where}"


class PickerScreen(Screen[None]):
    """Choose a scenario; Enter starts it."""

    BINDINGS = [
        Binding("enter", "start", "Start scenario", show=True),
        Binding("e", "evals", "Evals"),
    ]

    def __init__(self, settings: Settings, engine: Engine) -> None:
        super().__init__()
        self.settings = settings
        self.engine = engine
        self.scenarios: dict[str, Scenario] = {}
        self.broken: list[str] = []
        self._started = False

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("Pick a scenario and press Enter", id="picker-title")
        yield DataTable(id="scenario-table", cursor_type="row", zebra_stripes=True)
        yield Static("", id="picker-status")
        yield Footer()

    def on_mount(self) -> None:
        good, bad = list_scenarios()
        table: DataTable[Any] = self.query_one(DataTable)
        for column in ("scenario", "title", "subject", "description"):
            table.add_column(column, key=column)
        for scenario in good:
            self.scenarios[scenario.name] = scenario
            table.add_row(
                scenario.name,
                scenario.title,
                scenario.subject,
                scenario.description,
                key=scenario.name,
            )
        self.broken = [str(e) for e in bad]
        table.focus()
        self._show_status()

    def _show_status(self) -> None:
        try:
            mode = Controls(self.engine, default_mode=Mode(self.settings.mode)).mode().value
        except Exception as exc:  # a database the person pointed at may be unreachable
            mode = f"unknown ({type(exc).__name__})"
        lines = [f"brain: [b]{brain_preview(self.settings)}[/]   mode: [b]{mode}[/]"]
        lines += [f"[$error]broken scenario: {line}[/]" for line in self.broken]
        self.query_one("#picker-status", Static).update("\n".join(lines))

    @on(DataTable.RowSelected, "#scenario-table")
    def _selected(self, event: DataTable.RowSelected) -> None:
        self._start(str(event.row_key.value))

    def action_start(self) -> None:
        table: DataTable[Any] = self.query_one(DataTable)
        if table.row_count:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
            self._start(str(key.value))

    def action_evals(self) -> None:
        self.app.push_screen(EvalsScreen(self.engine))

    def _start(self, name: str) -> None:
        if self._started:
            return
        self._started = True
        from operator_console.tui.screens.dashboard import DashboardScreen

        scenario = self.scenarios[name]
        pace = getattr(self.app, "pace", 1.0)
        self.app.switch_screen(DashboardScreen(scenario, self.settings, self.engine, pace=pace))
