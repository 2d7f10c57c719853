"""Eval campaigns as stored: a list, newest first, and one campaign's table and charts.

Everything shown is what `operator-console eval` scored and stored; this screen only reads it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from rich.text import Text
from sqlalchemy.engine import Engine
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.content import Content
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static
from textual.worker import Worker, WorkerState

from operator_console.db.evals import CampaignSummary, EvalRepository
from operator_console.db.models import EvalCampaignRow
from operator_console.scenarios.scoring import Cell
from operator_console.tui.rows import sync_rows
from operator_console.tui.widgets.eval_chart import EvalChart, brain_variable

LIST_LIMIT = 200
SCENARIO_CHARS = 48
LABEL_WIDTH = 12
CAMPAIGN_COLUMNS = (
    "when",
    "campaign",
    "scenarios",
    "brains",
    "trials",
    "runs",
    "win rate",
    "state",
)
CELL_COLUMNS = (
    "scenario",
    "brain",
    "win",
    "TTD med",
    "TTD p90",
    "TTM med",
    "TTM p90",
    "wrong",
    "tickets",
    "incidents",
    "tokens",
)
HOW_TO = (
    "No eval campaigns in this database yet.\n\n"
    "Score the operator over many fresh runs, for example:\n"
    "  operator-console eval --scenarios NAME,NAME --brain rules,none --trials 3\n"
    "or from a campaign file (scenarios, brains, trials, mode, seed):\n"
    "  operator-console eval CAMPAIGN.toml\n\n"
    "Campaigns land in the database this console reads (--db as for the console); "
    "press g to look again."
)


def when(at: datetime | None) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if at is not None else "-"


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def rate(wins: int, runs: int) -> str:
    return f"{wins / runs:.0%} ({wins}/{runs})" if runs else "-"


def listed(names: Iterable[str], limit: int = SCENARIO_CHARS) -> str:
    names = list(names)
    text = f"{len(names)}: {', '.join(names)}"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def summary_cells(summary: CampaignSummary) -> tuple[Text, ...]:
    values = (
        when(summary.started_at),
        summary.id,
        listed(summary.scenarios),
        ",".join(summary.brains),
        str(summary.trials),
        str(summary.runs),
        rate(summary.wins, summary.runs),
        summary.state,
    )
    return tuple(Text(v) for v in values)


def cell_cells(cell: Cell) -> tuple[Text, ...]:
    values = (
        cell.scenario,
        cell.brain,
        rate(cell.wins, cell.runs),
        seconds(cell.ttd_median),
        seconds(cell.ttd_p90),
        seconds(cell.ttm_median),
        seconds(cell.ttm_p90),
        str(cell.wrong_actions),
        f"{cell.tickets:g}",
        f"{cell.incidents:g}",
        f"{cell.tokens:.0f}",
    )
    return tuple(Text(v, justify="left" if i < 2 else "right") for i, v in enumerate(values))


class CampaignTable(DataTable[Any]):
    """The campaigns; Enter (or a click on the highlighted row) opens one."""

    BINDINGS = [Binding("enter", "select_cursor", "Open")]


class EvalsScreen(Screen[None]):
    """Every stored campaign, newest first; Enter opens one, g reads them again."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("g", "reload", "Reload"),
    ]

    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self.engine = engine
        self.summaries: list[CampaignSummary] | None = None
        self.sub_title = "evals"

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("Eval campaigns (newest first)", classes="records-title")
        yield CampaignTable(id="evals-table", cursor_type="row", zebra_stripes=True)
        yield Static(Content(HOW_TO), id="evals-empty")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(CampaignTable)
        for column in CAMPAIGN_COLUMNS:
            table.add_column(column, key=column)
        table.display = False
        self.action_reload()

    def action_reload(self) -> None:
        self._load()

    @work(exclusive=True, group="evals", exit_on_error=False)
    async def _load(self) -> None:
        summaries = await asyncio.to_thread(EvalRepository(self.engine).summaries, LIST_LIMIT)
        self.summaries = summaries
        table = self.query_one(CampaignTable)
        with self.app.batch_update():
            sync_rows(table, CAMPAIGN_COLUMNS, [(s.id, summary_cells(s)) for s in summaries])
            table.display = bool(summaries)
            self.query_one("#evals-empty", Static).display = not summaries
        if summaries:
            table.focus()
        else:
            self.set_focus(None)  # nothing to open: no "Open" key in the footer

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group == "evals" and event.state is WorkerState.ERROR:
            self.notify(
                f"could not read the campaigns: {event.worker.error}",
                title="Evals",
                severity="error",
            )

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self.app.push_screen(EvalCampaignScreen(self.engine, str(event.row_key.value)))


def campaign_fields(row: EvalCampaignRow, summary: CampaignSummary) -> Content:
    spec = row.spec or {}
    pairs = [
        ("campaign", row.id),
        ("started", when(row.started_at)),
        ("state", f"{summary.state} {when(row.finished_at)}"),
        ("scenarios", ", ".join(summary.scenarios) or "-"),
        ("brains", ", ".join(summary.brains) or "-"),
        (
            "trials",
            f"{summary.trials} per scenario and brain, mode {spec.get('mode', '-')}, "
            f"seed {spec.get('seed', '-')}, {spec.get('parallel', 1)} at a time",
        ),
        ("runs", f"{summary.runs} scored, {rate(summary.wins, summary.runs)} won"),
    ]
    if summary.state == "running":
        pairs[2] = ("state", "running: its table appears when it finishes (g reloads)")
    elif summary.interrupted:
        pairs[2] = ("state", f"interrupted {when(row.finished_at)}: the runs that finished")
    return Content("\n").join(
        Content.assemble((f"{label:<{LABEL_WIDTH}}", "bold"), value) for label, value in pairs
    )


def legend(brains: Iterable[str]) -> Content:
    parts = [
        Content.styled(f"━━ {brain}", f"${brain_variable(i)}") for i, brain in enumerate(brains)
    ]
    return Content.assemble(
        "median seconds from the fault, per brain:  ", Content("   ").join(parts)
    )


class EvalCampaignScreen(Screen[None]):
    """One campaign: what it ran, its table per scenario and brain, and its TTD and TTM charts."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("g", "reload", "Reload"),
    ]

    def __init__(self, engine: Engine, campaign_id: str) -> None:
        super().__init__()
        self.engine = engine
        self.campaign_id = campaign_id
        self.cells: list[Cell] | None = None
        self.sub_title = f"campaign {campaign_id}"

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="eval-detail"):
            yield Static("loading…", id="eval-summary", classes="detail-fields")
            yield Static("By scenario and brain", classes="detail-section")
            yield DataTable(id="eval-cells", cursor_type="row", classes="detail-table")
            yield Static("Time to detect and to mitigate", classes="detail-section")
            yield Static("", id="eval-legend")
            with Horizontal(id="eval-charts"):
                yield EvalChart("ttd_median", "time to detect (s)", id="eval-ttd")
                yield EvalChart("ttm_median", "time to mitigate (s)", id="eval-ttm")
        yield Footer()

    def on_mount(self) -> None:
        table: DataTable[Any] = self.query_one("#eval-cells", DataTable)
        for column in CELL_COLUMNS:
            table.add_column(column, key=column)
        self.action_reload()

    def action_reload(self) -> None:
        self._load()

    def _read(self) -> tuple[EvalCampaignRow, CampaignSummary] | None:
        repo = EvalRepository(self.engine)
        row = repo.get(self.campaign_id)
        summary = repo.summary(self.campaign_id)
        return (row, summary) if row is not None and summary is not None else None

    @work(exclusive=True, group="evals", exit_on_error=False)
    async def _load(self) -> None:
        found = await asyncio.to_thread(self._read)
        with self.app.batch_update():
            if found is None:
                self.cells = []
                self.query_one("#eval-summary", Static).update(
                    Content.styled(f"no campaign {self.campaign_id} in this database", "$error")
                )
                return
            row, summary = found
            cells = [Cell.from_dict(c) for c in row.cells]
            self.cells = cells
            self.query_one("#eval-summary", Static).update(campaign_fields(row, summary))
            table: DataTable[Any] = self.query_one("#eval-cells", DataTable)
            sync_rows(
                table, CELL_COLUMNS, [(f"{c.scenario}|{c.brain}", cell_cells(c)) for c in cells]
            )
            brains = list(dict.fromkeys(c.brain for c in cells))
            self.query_one("#eval-legend", Static).update(legend(brains))
            for chart in self.query(EvalChart):
                chart.show(cells)
            self.query_one("#eval-charts").display = bool(cells)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group == "evals" and event.state is WorkerState.ERROR:
            self.notify(
                f"could not read campaign {self.campaign_id}: {event.worker.error}",
                title="Evals",
                severity="error",
            )
