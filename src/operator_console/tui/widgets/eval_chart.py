"""A campaign's times by scenario and brain as horizontal bars: one row per brain, a gap between
scenarios, the figures the campaign stored (nothing is scored here)."""

from __future__ import annotations

from collections.abc import Sequence

from textual.app import RenderResult
from textual.color import Color
from textual_plotext import PlotextPlot

from operator_console.scenarios.scoring import Cell

# Theme variables per brain, in the order the campaign names its brains.
BRAIN_VARIABLES = ("primary", "warning", "success", "accent", "secondary")
LABEL_CHARS = 18
# Rows plotext draws around the plot area: the title, two borders, the tick labels.
FRAME_ROWS = 4


def brain_variable(index: int) -> str:
    return BRAIN_VARIABLES[index % len(BRAIN_VARIABLES)]


def short_names(scenarios: Sequence[str]) -> list[str]:
    """Scenario names without the prefix they all share (up to a dash), cut to fit a label."""
    prefix = ""
    if len(scenarios) > 1 or (scenarios and "-" in scenarios[0]):
        first = scenarios[0]
        cut = first.find("-") + 1
        if cut and all(s.startswith(first[:cut]) for s in scenarios):
            prefix = first[:cut]
    out = []
    for name in scenarios:
        short = name[len(prefix) :] or name
        out.append(short if len(short) <= LABEL_CHARS else short[: LABEL_CHARS - 1] + "…")
    return out


class EvalChart(PlotextPlot):
    """One figure (`ttd_median`, `ttm_median`) of every cell: a bar per scenario and brain."""

    def __init__(self, figure: str, title: str, *, id: str | None = None) -> None:
        super().__init__(id=id, classes="eval-chart")
        self.figure = figure
        self.chart_title = title
        self.scenarios: list[str] = []
        self.brains: list[str] = []
        self.values: dict[tuple[str, str], float | None] = {}

    def show(self, cells: Sequence[Cell]) -> None:
        """Take the campaign's cells; the chart is as tall as its bars need."""
        self.scenarios = list(dict.fromkeys(c.scenario for c in cells))
        self.brains = list(dict.fromkeys(c.brain for c in cells))
        self.values = {(c.scenario, c.brain): getattr(c, self.figure) for c in cells}
        self.styles.height = self.rows() + FRAME_ROWS
        self.refresh()

    def rows(self) -> int:
        """One row per bar and one between scenarios."""
        return max(1, len(self.scenarios) * (len(self.brains) + 1) - 1)

    def _rgb(self, variable: str) -> tuple[int, int, int]:
        value = self.app.theme_variables.get(variable) or self.app.theme_variables["foreground"]
        return Color.parse(value).rgb

    def render(self) -> RenderResult:
        plt = self.plt
        plt.clear_figure()
        rows = self.rows()
        step = len(self.brains) + 1
        present = [v for v in self.values.values() if v is not None]
        top = max(present) if present else 1.0
        muted = self._rgb("foreground-darken-1")
        for b, brain in enumerate(self.brains):
            for s, scenario in enumerate(self.scenarios):
                value = self.values.get((scenario, brain))
                y = rows - 1 - (s * step + b)  # first scenario on top, its brains in order
                if value is None:
                    plt.text("not measured", x=0, y=y, color=muted, alignment="left")
                    continue
                plt.plot([0, value], [y, y], marker="━", color=self._rgb(brain_variable(b)))
        # A scenario's label sits on its first brain's row.
        plt.yticks(
            [rows - 1 - s * step for s in range(len(self.scenarios))], short_names(self.scenarios)
        )
        plt.ylim(0, rows - 1)
        plt.xlim(0, top * 1.05 if top > 0 else 1.0)
        plt.title(self.chart_title if present else f"{self.chart_title}: none measured")
        return super().render()
