"""The scenario picker: every scenario, which brain will speak, and the persisted mode."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from rich.text import Text
from sqlalchemy.engine import Engine
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.content import Content
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static
from textual.worker import Worker, WorkerState

from operator_console.actions.store import Controls, Mode
from operator_console.contract import RuntimeDescription, subject_kinds
from operator_console.db.evals import EvalRepository
from operator_console.scenarios import list_scenarios
from operator_console.scenarios.model import Scenario
from operator_console.scenarios.scoring import Cell
from operator_console.settings import Settings
from operator_console.tui.screens.evals import EvalsScreen, seconds

COLUMNS = ("scenario", "title", "subject", "win", "TTD", "TTM", "description")
EVAL_BRAIN = "rules"  # the picker's figures: the offline brain every machine can run


@dataclass(slots=True)
class Extras:
    """What the picker reads once in a thread: each subject's runtime, the last eval figures."""

    runtimes: dict[str, RuntimeDescription] = field(default_factory=dict)
    cells: dict[str, Cell] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def read_extras(engine: Engine) -> Extras:
    """Blocking: every installed subject's runtime (a binary's --version may run) and, per
    scenario, the rules brain's cell of the newest finished campaign that ran it."""
    extras = Extras()
    for name, kind in sorted(subject_kinds().items()):
        try:
            extras.runtimes[name] = kind.describe_runtime()
        except Exception as exc:  # a plug-in's own failure must not hide the picker
            extras.runtimes[name] = RuntimeDescription(
                f"cannot say what runs: {type(exc).__name__}: {exc}", ready=False
            )
    try:
        latest = EvalRepository(engine).latest_cells()
    except Exception as exc:  # a database the person pointed at may be unreachable
        extras.problems.append(f"last eval figures unavailable: {type(exc).__name__}")
        latest = {}
    for scenario, cells in latest.items():
        for cell in cells:
            if cell.get("brain") == EVAL_BRAIN:
                extras.cells[scenario] = Cell.from_dict(cell)
    return extras


def eval_cells(cell: Cell | None) -> tuple[Text, Text, Text]:
    if cell is None:
        return Text("-", justify="right"), Text("-", justify="right"), Text("-", justify="right")
    return (
        Text(f"{cell.wins}/{cell.runs}", justify="right"),
        Text(seconds(cell.ttd_median), justify="right"),
        Text(seconds(cell.ttm_median), justify="right"),
    )


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
        self.extras: Extras | None = None
        self.mode_text = ""
        self._started = False

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(
            "Pick a scenario and press Enter   "
            f"[dim](win, TTD, TTM: the {EVAL_BRAIN} brain's last eval, median seconds)[/]",
            id="picker-title",
        )
        yield DataTable(id="scenario-table", cursor_type="row", zebra_stripes=True)
        yield Static("", id="picker-about")
        yield Static("", id="picker-status")
        yield Footer()

    def on_mount(self) -> None:
        good, bad = list_scenarios()
        table: DataTable[Any] = self.query_one(DataTable)
        for column in COLUMNS:
            table.add_column(column, key=column)
        for scenario in good:
            self.scenarios[scenario.name] = scenario
            table.add_row(
                scenario.name,
                scenario.title,
                scenario.subject,
                *eval_cells(None),
                scenario.description,
                key=scenario.name,
            )
        self.broken = [str(e) for e in bad]
        table.focus()
        try:
            self.mode_text = (
                Controls(self.engine, default_mode=Mode(self.settings.mode)).mode().value
            )
        except Exception as exc:  # a database the person pointed at may be unreachable
            self.mode_text = f"unknown ({type(exc).__name__})"
        self._show_status()
        self._load_extras()

    @work(exclusive=True, group="picker-extras", exit_on_error=False)
    async def _load_extras(self) -> None:
        extras = await asyncio.to_thread(read_extras, self.engine)
        self.extras = extras
        table: DataTable[Any] = self.query_one(DataTable)
        with self.app.batch_update():
            for name in self.scenarios:
                for column, value in zip(
                    ("win", "TTD", "TTM"), eval_cells(extras.cells.get(name)), strict=True
                ):
                    table.update_cell(name, column, value, update_width=True)
            self._show_about()
            self._show_status()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group == "picker-extras" and event.state is WorkerState.ERROR:
            self.notify(f"could not read the eval figures: {event.worker.error}", severity="error")

    @on(DataTable.RowHighlighted, "#scenario-table")
    def _highlighted(self) -> None:
        self._show_about()

    def _highlighted_scenario(self) -> Scenario | None:
        table: DataTable[Any] = self.query_one(DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        return self.scenarios.get(str(key.value))

    def _show_about(self) -> None:
        """What the highlighted scenario's subject runs here (its binary and release)."""
        scenario = self._highlighted_scenario()
        about = self.query_one("#picker-about", Static)
        if scenario is None or self.extras is None:
            about.update("")
            return
        runtime = self.extras.runtimes.get(scenario.subject)
        if runtime is None:
            about.update("")
            return
        label = Content.styled(f"{scenario.subject} lab: ", "bold")
        if runtime.ready:
            about.update(label + Content(runtime.summary))
        else:
            about.update(
                Content.assemble(
                    (f"{scenario.subject} lab cannot start here: ", "bold $error"),
                    (runtime.summary, "$error"),
                )
            )

    def _show_status(self) -> None:
        lines = [f"brain: [b]{brain_preview(self.settings)}[/]   mode: [b]{self.mode_text}[/]"]
        if self.extras is not None:
            watch = [n for n, r in self.extras.runtimes.items() if not r.deploys]
            lines += [
                f"[dim]watch only (no scenarios): {name} — "
                f"operator-console watch {name} --endpoints FILE[/]"
                for name in watch
            ]
            lines += [f"[$warning]{line}[/]" for line in self.extras.problems]
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
