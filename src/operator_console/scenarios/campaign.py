"""Eval campaigns: scenarios run many times per brain, each trial a fresh run, each scored.

A campaign file (TOML) names what to run:

    name = "nightly"
    scenarios = ["node-kill-scenario", "path/to/own.toml"]
    brains = ["none", "rules"]      # none: no agent (the scenario clears its own fault)
    trials = 3
    mode = "auto"                   # the mode the agent runs in
    seed = 7                        # the workload's seed, plus the trial number
    parallel = 2                    # labs side by side
    pace = 1.0                      # chapter timings
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tomllib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.engine import Engine

from operator_console.actions.store import Mode
from operator_console.contract import SpecError, get_subject_kind
from operator_console.db.evals import EvalRepository
from operator_console.domain.events import Event
from operator_console.runtime import Runtime
from operator_console.scenarios.catalog import find_scenario
from operator_console.scenarios.model import Scenario, ScenarioError
from operator_console.scenarios.runner import ScenarioRunner
from operator_console.scenarios.scoring import NONE, RunScore, score, table
from operator_console.settings import Settings

log = logging.getLogger(__name__)

BRAINS = ("none", "rules", "claude")
BrainName = Literal["none", "rules", "claude"]


class CampaignError(ValueError):
    """A campaign cannot run as given; the message names the field and the fix."""


class _CampaignFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="campaign", min_length=1, max_length=80)
    scenarios: list[str] = Field(min_length=1)
    brains: list[BrainName] = Field(default_factory=lambda: list[BrainName](["rules"]))
    trials: int = Field(default=1, ge=1, le=1000)
    mode: Literal["observe", "approve", "auto"] = "auto"
    seed: int | None = None
    parallel: int = Field(default=1, ge=1, le=16)
    pace: float = Field(default=1.0, ge=0.05, le=10)


@dataclass(slots=True)
class Campaign:
    name: str
    scenarios: list[Scenario]
    brains: list[str]
    trials: int = 1
    mode: Mode = Mode.AUTO
    seed: int | None = None
    parallel: int = 1
    pace: float = 1.0

    def spec(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "scenarios": [s.name for s in self.scenarios],
            "brains": list(self.brains),
            "trials": self.trials,
            "mode": self.mode.value,
            "seed": self.seed,
            "parallel": self.parallel,
            "pace": self.pace,
        }


def load_scenarios(names: Sequence[str]) -> list[Scenario]:
    try:
        return [find_scenario(name) for name in names]
    except ScenarioError as exc:
        raise CampaignError(str(exc)) from None


def load_campaign(path: Path, **overrides: Any) -> Campaign:
    """A campaign file, with command-line values taking precedence over the file's."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CampaignError(f"{path}: no such campaign file") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CampaignError(f"{path}: not a TOML campaign file ({exc})") from None
    data.update({k: v for k, v in overrides.items() if v is not None})
    return campaign_from(data, where=str(path))


def campaign_from(data: dict[str, Any], *, where: str = "campaign") -> Campaign:
    try:
        parsed = _CampaignFile.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        field_name = ".".join(str(p) for p in error["loc"]) or "campaign"
        raise CampaignError(f"{where}: {field_name}: {error['msg']}") from None
    return Campaign(
        name=parsed.name,
        scenarios=load_scenarios(parsed.scenarios),
        brains=list(dict.fromkeys(parsed.brains)),
        trials=parsed.trials,
        mode=Mode(parsed.mode),
        seed=parsed.seed,
        parallel=parsed.parallel,
        pace=parsed.pace,
    )


def new_campaign_id(name: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{name[:16]}-{stamp}-{uuid.uuid4().hex[:4]}"


def _seeded(scenario: Scenario, seed: int | None) -> Scenario:
    """The scenario with the workload seeded, when its subject's workload takes a seed."""
    if seed is None:
        return scenario
    workload = {**scenario.workload, "seed": seed}
    try:
        get_subject_kind(scenario.subject).validate(scenario.topology, workload)
    except SpecError:
        return scenario
    return scenario.model_copy(update={"workload": workload})


@dataclass(slots=True)
class CampaignResult:
    campaign_id: str
    scores: list[RunScore] = field(default_factory=list)
    interrupted: bool = False


ScoreSink = Callable[[RunScore], None]


class CampaignRunner:
    """Runs every trial (up to `parallel` side by side), scores it and stores the score."""

    def __init__(
        self,
        campaign: Campaign,
        settings: Settings,
        engine: Engine,
        *,
        on_score: ScoreSink | None = None,
        on_event: Callable[[str, Event], None] | None = None,
    ) -> None:
        self.campaign = campaign
        self.settings = settings
        self.engine = engine
        self.on_score = on_score
        self.on_event = on_event
        self.evals = EvalRepository(engine)
        self.result = CampaignResult(new_campaign_id(campaign.name))

    def trials(self) -> list[tuple[Scenario, str, int]]:
        c = self.campaign
        return [
            (scenario, brain, trial)
            for trial in range(1, c.trials + 1)
            for scenario in c.scenarios
            for brain in c.brains
        ]

    async def run(self) -> CampaignResult:
        """Every trial; cancelled (Ctrl+C), it stops the running trials and keeps the rest."""
        result = self.result
        await asyncio.to_thread(
            self.evals.create, result.campaign_id, self.campaign.name, self.campaign.spec()
        )
        gate = asyncio.Semaphore(self.campaign.parallel)

        async def one(scenario: Scenario, brain: str, trial: int) -> None:
            async with gate:
                scored = await self._trial(scenario, brain, trial)
            result.scores.append(scored)
            await asyncio.to_thread(self.evals.add_run, result.campaign_id, scored.to_dict())
            if self.on_score is not None:
                self.on_score(scored)

        tasks = [asyncio.create_task(one(*t)) for t in self.trials()]
        try:
            await asyncio.gather(*tasks)
        except asyncio.CancelledError:
            result.interrupted = True
            for task in tasks:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.shield(asyncio.gather(*tasks, return_exceptions=True))
            raise
        finally:
            cells = [c.to_dict() for c in table(result.scores)]
            await asyncio.shield(
                asyncio.to_thread(
                    self.evals.finish, result.campaign_id, cells, interrupted=result.interrupted
                )
            )
        return result

    async def _trial(self, scenario: Scenario, brain: str, trial: int) -> RunScore:
        c = self.campaign
        seed = c.seed + trial if c.seed is not None else None
        seeded = _seeded(scenario, seed)
        runtime = Runtime(
            seeded.plan,
            self.settings,
            self.engine,
            agent=brain != NONE,
            brain=None if brain == NONE else brain,
            mode=c.mode,
        )
        events: list[Event] = []

        def listen(event: Event) -> None:
            if event.on_timeline:
                events.append(event)
                if self.on_event is not None:
                    self.on_event(runtime.run_id, event)

        runtime.bus.add_listener(listen)
        outcome = await ScenarioRunner(runtime, seeded, pace=c.pace, auto_advance=True).run()
        return score(scenario, brain, trial, runtime.run_id, events, outcome.ok)
