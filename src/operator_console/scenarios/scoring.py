"""Scoring one run the way AIOpsLab scores an operator: detected and how fast, localized, the root
cause named, mitigated and how fast, wrong actions, tickets per fault, what the brain cost."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from operator_console.domain.events import (
    ActionExecuting,
    ActionProposed,
    ActionVerified,
    AgentStep,
    DiagnosisReady,
    Event,
    FaultInjected,
    RunFinished,
    TicketOpened,
    TicketResolved,
    doing,
)
from operator_console.scenarios.model import Scenario

NONE = "none"  # the baseline: no agent, the scenario clears its own fault


@dataclass(frozen=True, slots=True)
class RunScore:
    """One trial of one scenario with one brain."""

    scenario: str
    brain: str
    trial: int
    run_id: str
    faults: str  # the kinds of fault injected, in order ("" for none)
    detected: bool
    ttd_s: float | None
    localized: bool
    root_cause_ok: bool | None  # None when the scenario names no root cause, or no agent ran
    mitigated: bool
    ttm_s: float | None
    wrong_actions: int
    tickets: float  # tickets opened per fault (all tickets when there was no fault)
    incidents: float  # incidents per fault
    tokens: int
    cost_usd: float
    steps: int
    wall_s: float
    win: bool
    problems: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["problems"] = list(self.problems)
        return data


def score(
    scenario: Scenario, brain: str, trial: int, run_id: str, events: Sequence[Event], ok: bool
) -> RunScore:
    """The run's figures from its timeline (`ok` is the scenario's own verdict)."""
    expect = scenario.expect
    faults = [e for e in events if isinstance(e, FaultInjected)]
    t0 = faults[0].t if faults else 0.0
    opened = [e for e in events if isinstance(e, TicketOpened) and e.t >= t0]
    expected_target = expect.target or (faults[0].target if faults else None)
    detected = bool(opened) if faults else False
    ttd = round(opened[0].t - t0, 3) if faults and opened else None
    on_target = [e for e in opened if expected_target is None or e.target == expected_target]
    localized = bool(on_target) if faults else not opened

    labels = [e.label for e in events if isinstance(e, DiagnosisReady)]
    targeted = {e.ticket_id for e in on_target}
    target_labels = [
        e.label for e in events if isinstance(e, DiagnosisReady) and e.ticket_id in targeted
    ]
    root_cause_ok: bool | None = None
    if expect.root_cause and brain != NONE:
        right = (
            {expect.root_cause} if isinstance(expect.root_cause, str) else set(expect.root_cause)
        )
        root_cause_ok = bool(right & set(target_labels or labels))

    remedy = doing(events, expect.action) if expect.action is not None else set()
    verified_expected = [
        e for e in events if isinstance(e, ActionVerified) and e.action_id in remedy
    ]
    if brain == NONE:
        # Nobody acts: the time to mitigate is the time until the scenario's own clearing shows.
        resolved = [e for e in events if isinstance(e, TicketResolved) and e.ticket_id in targeted]
        mitigated = bool(resolved) and bool(faults)
        ttm = round(resolved[0].t - t0, 3) if mitigated else None
    else:
        verified = [
            e
            for e in events
            if isinstance(e, ActionVerified) and (expect.action is None or e.action_id in remedy)
        ]
        mitigated = bool(verified) and bool(faults)
        ttm = round(verified[0].t - t0, 3) if mitigated else None

    touched = {f.target for f in faults}
    targets = {e.action_id: set(e.targets) for e in events if isinstance(e, ActionProposed)}
    executed = [e for e in events if isinstance(e, ActionExecuting)]
    # The scenario's own remediation, verified, is right whatever else it touches (moving
    # leadership touches the member it moves to); anything else must stay on what the fault hit.
    remedies = {e.action_id for e in verified_expected} if brain != NONE else set()
    if faults:
        wrong = sum(
            1
            for e in executed
            if e.action_id not in remedies and not targets.get(e.action_id, set()) <= touched
        )
    else:
        wrong = len(executed)  # nothing should happen in a run without a fault

    per = max(len(faults), 1)
    incidents = {e.incident_id or e.ticket_id for e in opened}
    usage = [e.usage for e in events if isinstance(e, DiagnosisReady)]
    tokens = sum(
        int(u.get("input_tokens") or 0)
        + int(u.get("output_tokens") or 0)
        + int(u.get("cache_read_tokens") or 0)
        for u in usage
    )
    cost = round(sum(float(u.get("estimated_cost_usd") or 0.0) for u in usage), 6)
    finished = next((e for e in events if isinstance(e, RunFinished)), None)
    wall = float(finished.summary.get("duration_s", 0.0)) if finished else 0.0
    problems = tuple(finished.summary.get("problems", ())) if finished else ("did not finish",)

    win = ok and wrong == 0
    if faults and brain != NONE:
        win = win and (mitigated or expect.action is None) and root_cause_ok is not False
    if not faults:
        win = win and not opened
    return RunScore(
        scenario=scenario.name,
        brain=brain,
        trial=trial,
        run_id=run_id,
        faults=",".join(f.kind for f in faults),
        detected=detected,
        ttd_s=ttd,
        localized=localized,
        root_cause_ok=root_cause_ok,
        mitigated=mitigated,
        ttm_s=ttm,
        wrong_actions=wrong,
        tickets=round(len(opened) / per, 2),
        incidents=round(len(incidents) / per, 2),
        tokens=tokens,
        cost_usd=cost,
        steps=sum(isinstance(e, AgentStep) for e in events),
        wall_s=round(wall, 3),
        win=win,
        problems=problems,
    )


def quantile(values: Sequence[float], q: float) -> float | None:
    """The q-quantile (nearest rank) of the values that exist."""
    present = sorted(v for v in values if v is not None)
    if not present:
        return None
    if q == 0.5:
        return round(statistics.median(present), 3)
    rank = max(1, min(len(present), round(q * len(present) + 0.5)))
    return round(present[rank - 1], 3)


@dataclass(frozen=True, slots=True)
class Cell:
    """What one scenario and one brain did over their trials."""

    scenario: str
    brain: str
    runs: int
    wins: int
    ttd_median: float | None
    ttd_p90: float | None
    ttm_median: float | None
    ttm_p90: float | None
    wrong_actions: int
    tickets: float
    incidents: float
    tokens: float
    cost_usd: float

    @property
    def win_rate(self) -> float:
        return self.wins / self.runs if self.runs else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "win_rate": round(self.win_rate, 3)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Cell:
        """A stored cell back (a figure a campaign did not store reads as none)."""

        def number(key: str) -> float | None:
            value = data.get(key)
            return None if value is None else float(value)

        return cls(
            scenario=str(data.get("scenario", "")),
            brain=str(data.get("brain", "")),
            runs=int(data.get("runs") or 0),
            wins=int(data.get("wins") or 0),
            ttd_median=number("ttd_median"),
            ttd_p90=number("ttd_p90"),
            ttm_median=number("ttm_median"),
            ttm_p90=number("ttm_p90"),
            wrong_actions=int(data.get("wrong_actions") or 0),
            tickets=float(data.get("tickets") or 0.0),
            incidents=float(data.get("incidents") or 0.0),
            tokens=float(data.get("tokens") or 0.0),
            cost_usd=float(data.get("cost_usd") or 0.0),
        )


def table(scores: Sequence[RunScore]) -> list[Cell]:
    """One cell per scenario and brain: scenarios by name, brains in the order they were
    first scored (runs finish in any order when they run side by side)."""
    brains = list(dict.fromkeys(s.brain for s in scores))
    keys = sorted(
        dict.fromkeys((s.scenario, s.brain) for s in scores),
        key=lambda key: (key[0], brains.index(key[1])),
    )
    cells = []
    for scenario, brain in keys:
        runs = [s for s in scores if s.scenario == scenario and s.brain == brain]
        ttd = [s.ttd_s for s in runs if s.ttd_s is not None]
        ttm = [s.ttm_s for s in runs if s.ttm_s is not None]
        cells.append(
            Cell(
                scenario=scenario,
                brain=brain,
                runs=len(runs),
                wins=sum(s.win for s in runs),
                ttd_median=quantile(ttd, 0.5),
                ttd_p90=quantile(ttd, 0.9),
                ttm_median=quantile(ttm, 0.5),
                ttm_p90=quantile(ttm, 0.9),
                wrong_actions=sum(s.wrong_actions for s in runs),
                tickets=round(statistics.mean(s.tickets for s in runs), 2),
                incidents=round(statistics.mean(s.incidents for s in runs), 2),
                tokens=round(statistics.mean(s.tokens for s in runs), 1),
                cost_usd=round(sum(s.cost_usd for s in runs), 6),
            )
        )
    return cells


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def render_table(cells: Sequence[Cell]) -> str:
    """The campaign's table as text (what `eval` prints on stderr)."""
    header = (
        f"{'SCENARIO':<32} {'BRAIN':<7} {'WIN':>7} {'TTD med':>8} {'TTD p90':>8} "
        f"{'TTM med':>8} {'TTM p90':>8} {'WRONG':>5} {'TICKETS':>7} {'INCID':>5} {'TOKENS':>7}"
    )
    lines = [header]
    for c in cells:
        lines.append(
            f"{c.scenario:<32} {c.brain:<7} {f'{c.wins}/{c.runs}':>7} {_s(c.ttd_median):>8} "
            f"{_s(c.ttd_p90):>8} {_s(c.ttm_median):>8} {_s(c.ttm_p90):>8} "
            f"{c.wrong_actions:>5} {c.tickets:>7.2f} {c.incidents:>5.2f} {c.tokens:>7.0f}"
        )
    return "\n".join(lines)


def render_detection(scores: Sequence[RunScore]) -> str:
    """Time to detect per fault kind (the runs with a fault), median and max over the brains."""
    kinds: dict[str, list[float]] = {}
    for s in scores:
        if s.faults and s.ttd_s is not None:
            kinds.setdefault(s.faults, []).append(s.ttd_s)
    lines = [f"{'FAULT':<24} {'RUNS':>5} {'TTD med':>8} {'TTD max':>8}"]
    for kind, values in sorted(kinds.items()):
        lines.append(
            f"{kind:<24} {len(values):>5} {_s(quantile(values, 0.5)):>8} {_s(max(values)):>8}"
        )
    return "\n".join(lines)
