"""What a subject hands the console to draw: cluster panel rows and workload series.

The console renders these for every subject alike; it never reads a subject's own state keys."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

# How a row's state reads at a glance; the console maps these to theme colours.
Tone = Literal["ok", "warning", "error", "muted"]


@dataclass(frozen=True, slots=True)
class Column:
    """An extra column of the cluster panel, after target, role, state and health."""

    key: str
    label: str


@dataclass(frozen=True, slots=True)
class PanelRow:
    """One target as the last observation saw it."""

    target: str
    state: str
    tone: Tone = "ok"
    role: str = ""
    health: str = ""
    cells: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ClusterView:
    """The cluster panel: rows in order, the subject's extra columns, and a one-line note."""

    rows: tuple[PanelRow, ...]
    columns: tuple[Column, ...] = ()
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClusterView:
        return cls(
            rows=tuple(PanelRow(**row) for row in data.get("rows") or ()),
            columns=tuple(Column(**column) for column in data.get("columns") or ()),
            note=str(data.get("note") or ""),
        )


@dataclass(frozen=True, slots=True)
class SeriesSpec:
    """One line of the workload panel: a sample value's key, its label and unit, and the
    threshold above which it is in alarm (None: no alarm)."""

    key: str
    label: str
    unit: str = "/s"
    alarm: float | None = None
    digits: int = 0

    def breaches(self, value: float | None) -> bool:
        return self.alarm is not None and value is not None and value > self.alarm

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
