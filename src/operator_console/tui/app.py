"""The operator console app: pick a scenario, watch it live, approve what the agent wants to do."""

from __future__ import annotations

from sqlalchemy.engine import Engine
from textual.app import App
from textual.binding import Binding

from operator_console.runtime import RunOptions, RunPlan
from operator_console.scenarios.model import Scenario
from operator_console.settings import Settings
from operator_console.tui.screens.dashboard import DashboardScreen
from operator_console.tui.screens.picker import PickerScreen


class OperatorApp(App[None]):
    """A view of the runtime: the CLI hands it settings and a database engine."""

    CSS_PATH = "app.tcss"
    TITLE = "operator-console"
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "toggle_help", "Help"),
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
    ]

    def __init__(
        self,
        *,
        settings: Settings,
        engine: Engine,
        pace: float = 1.0,
        scenario: Scenario | None = None,
        options: RunOptions | None = None,
        watch: tuple[RunPlan, float | None] | None = None,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.engine = engine
        self.pace = pace
        self.scenario = scenario
        self.options = options
        self.attached = watch

    def on_mount(self) -> None:
        if self.attached is not None:  # `operator-console watch SUBJECT`
            self.push_screen(
                DashboardScreen(
                    None, self.settings, self.engine, options=self.options, watch=self.attached
                )
            )
        elif self.scenario is None:
            self.push_screen(PickerScreen(self.settings, self.engine))
        else:  # `operator-console run SCENARIO`: straight to its dashboard
            self.push_screen(
                DashboardScreen(
                    self.scenario,
                    self.settings,
                    self.engine,
                    pace=self.pace,
                    options=self.options,
                )
            )

    def action_toggle_help(self) -> None:
        """Textual's key panel lists every binding of the focused screen with its description."""
        if self.screen.query("HelpPanel"):
            self.action_hide_help_panel()
        else:
            self.action_show_help_panel()

    async def action_quit(self) -> None:
        """Stop the run (every child process) before leaving, so nothing outlives the console."""
        for screen in list(self.screen_stack):
            if isinstance(screen, DashboardScreen):
                await screen.stop_run()
        self.exit()
