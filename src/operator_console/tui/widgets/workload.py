"""The workload panel: the subject's series as line charts over the last two minutes.

One chart per unit (traffic per second, latency in ms...), the alarm threshold as a labelled
line, a series drawn in the error colour while it breaches, and the fault's injection and the
tickets' opening marked on the time axis."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult, RenderResult
from textual.color import Color
from textual.containers import Horizontal, Vertical
from textual.widgets import Static
from textual_plotext import PlotextPlot

from operator_console.contract import SeriesSpec

HISTORY_S = 120
MAX_CHARTS = 2
UNIT_TITLES = {"/s": "per second", "ms": "(ms)"}
LINE_VARIABLES = ("primary", "success", "accent", "warning", "secondary", "foreground")


@dataclass(frozen=True, slots=True)
class Mark:
    """A moment worth seeing on the time axis (a fault injected, a ticket opened)."""

    t: float
    label: str
    tone: str  # a theme variable: error, warning, success


def downsample(points: Sequence[tuple[float, float]], buckets: int) -> list[tuple[float, float]]:
    """At most about 2 * `buckets` points, keeping each bucket's min and max (spikes survive)."""
    if buckets <= 0 or len(points) <= 2 * buckets:
        return list(points)
    out: list[tuple[float, float]] = []
    size = len(points) / buckets
    for i in range(buckets):
        chunk = points[int(i * size) : max(int((i + 1) * size), int(i * size) + 1)]
        if not chunk:
            continue
        low = min(chunk, key=lambda p: p[1])
        high = max(chunk, key=lambda p: p[1])
        out.extend(sorted({low, high}))
    return out


class MetricChart(PlotextPlot):
    """One chart: its series, re-plotted from scratch on every render (sized to the widget)."""

    def __init__(self, unit: str, *, id: str | None = None) -> None:
        super().__init__(id=id, classes="metric-chart")
        self.unit = unit
        self.specs: list[SeriesSpec] = []
        self.points: dict[str, list[tuple[float, float]]] = {}
        self.marks: list[Mark] = []
        self.now = 0.0

    def _rgb(self, variable: str) -> tuple[int, int, int]:
        value = self.app.theme_variables.get(variable) or self.app.theme_variables["foreground"]
        return Color.parse(value).rgb

    def render(self) -> RenderResult:
        plt = self.plt
        plt.clear_figure()
        width = max(self.size.width, 10)
        plt.xlim(-HISTORY_S, 0)
        plt.xticks([-120, -90, -60, -30, 0], ["-2m", "-90s", "-60s", "-30s", "now"])
        top = 1.0
        for index, spec in enumerate(self.specs):
            points = downsample(self.points.get(spec.key, []), width)
            if points:
                top = max(top, max(y for _, y in points))
            last = points[-1][1] if points else None
            variable = (
                "error" if spec.breaches(last) else LINE_VARIABLES[index % len(LINE_VARIABLES)]
            )
            if points:
                # One dot a second reads as a line at braille resolution; plotext's line
                # interpolation would cost five times as much CPU every redraw.
                xs = [t - self.now for t, _ in points]
                plt.scatter(xs, [y for _, y in points], marker="braille", color=self._rgb(variable))
            if spec.alarm:  # an alarm at 0 (any error) colours the line; no line to draw
                top = max(top, spec.alarm * 1.25)
                plt.hline(spec.alarm, color=self._rgb("error"))
                plt.text(
                    f"{spec.label} alarm {spec.alarm:g}",
                    x=-HISTORY_S + 1,
                    y=spec.alarm,
                    color=self._rgb("error"),
                    alignment="left",
                )
        for mark in self.marks:
            x = mark.t - self.now
            if -HISTORY_S <= x <= 0:
                plt.vline(x, color=self._rgb(mark.tone))
                plt.text(mark.label, x=x, y=top, color=self._rgb(mark.tone), alignment="left")
        plt.ylim(0, top * 1.05)
        names = ", ".join(spec.label for spec in self.specs)
        title = f"{names} {UNIT_TITLES.get(self.unit, self.unit)}"
        # The legend below names every series; a narrow chart keeps only the unit.
        plt.title(
            title if len(title) <= self.size.width - 12 else UNIT_TITLES.get(self.unit, self.unit)
        )
        return super().render()


class WorkloadPanel(Vertical):
    """The subject's workload series over the last two minutes, one chart per unit."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.border_title = "Workload"
        self.specs: list[SeriesSpec] = []
        self.samples: deque[tuple[float, dict[str, float | None]]] = deque(maxlen=HISTORY_S)
        self.marks: deque[Mark] = deque(maxlen=20)
        self.now = 0.0

    def compose(self) -> ComposeResult:
        yield Horizontal(id="charts")
        yield Static("waiting for traffic...", id="workload-legend")

    @property
    def charts(self) -> list[MetricChart]:
        return list(self.query(MetricChart))

    def configure(self, specs: Iterable[SeriesSpec]) -> None:
        """The subject's series, known once the run's deployment exists; one chart per unit."""
        self.specs = list(specs)
        units = list(dict.fromkeys(spec.unit for spec in self.specs))[:MAX_CHARTS]
        holder = self.query_one("#charts", Horizontal)
        holder.remove_children()
        charts = []
        for i, unit in enumerate(units):
            chart = MetricChart(unit, id=f"chart-{i}")
            chart.specs = [s for s in self.specs if s.unit == unit]
            charts.append(chart)
        holder.mount_all(charts)

    def record(self, t: float, values: dict[str, float | None]) -> None:
        """Keep one sample without drawing (the panel may be covered)."""
        self.now = t
        self.samples.append((t, values))

    def mark(self, t: float, label: str, tone: str) -> None:
        self.marks.append(Mark(t, label, tone))

    def add_sample(self, t: float, values: dict[str, float | None]) -> None:
        self.record(t, values)
        self.redraw()

    def redraw(self) -> None:
        """Hand each chart its points and refresh it; the legend shows the latest values."""
        points: dict[str, list[tuple[float, float]]] = {s.key: [] for s in self.specs}
        for t, values in self.samples:
            for spec in self.specs:
                value = values.get(spec.key)
                if isinstance(value, int | float):
                    points[spec.key].append((t, float(value)))
        for chart in self.charts:
            chart.points = points
            chart.marks = list(self.marks)
            chart.now = self.now
            chart.refresh()
        self._legend()

    def _legend(self) -> None:
        latest = self.samples[-1][1] if self.samples else {}
        error = self.app.get_css_variables().get("error", "")
        legend = Text()
        breaching = False
        for spec in self.specs:
            value = latest.get(spec.key)
            text = "-" if value is None else f"{value:.{spec.digits}f}"
            breach = spec.breaches(value)
            breaching = breaching or breach
            if legend:
                legend.append("  ")
            legend.append(f"{spec.label} ", style="dim")
            legend.append(
                f"{text}{spec.unit if spec.unit != '/s' else ''}",
                style=f"bold {error}" if breach else "bold",
            )
        self.query_one("#workload-legend", Static).update(legend)
        self.set_class(breaching, "-error")
