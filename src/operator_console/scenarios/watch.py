"""Watching a cluster the console did not start: no chapters and no faults, the monitor, the
agent and the executor running until a set duration ends or the person stops it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from operator_console.domain.events import (
    ActionFailed,
    ActionNotVerified,
    ActionProposed,
    ActionVerified,
    Event,
    TicketOpened,
    TicketResolved,
)
from operator_console.runtime import RunPlan, Runtime
from operator_console.scenarios.runner import RunOutcome
from operator_console.scenarios.scoreboard import SUMMARY_KEY, Scoreboard

log = logging.getLogger(__name__)


class EndpointsError(ValueError):
    """An endpoints file cannot be used; the message names the file and the fix."""


def load_endpoints(path: Path) -> dict[str, Any]:
    """The endpoints file `lab up` prints (or one written by hand), as a JSON object."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EndpointsError(
            f"{path}: no such file; `operator-console lab up` prints one"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EndpointsError(f"{path}: cannot read it: {exc}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise EndpointsError(f"{path}: not JSON ({exc}); give the JSON `lab up` prints") from None
    if not isinstance(data, dict):
        raise EndpointsError(f"{path}: a JSON object is needed, not {type(data).__name__}")
    return data


def watch_plan(
    subject: str, endpoints: Mapping[str, Any], *, compose: str | None = None
) -> RunPlan:
    """A watch of a running cluster; with `compose`, of a stack whose containers it may act on."""
    return RunPlan(
        name="watch",
        subject=subject,
        placement="attach",
        endpoints=dict(endpoints),
        compose=compose,
    )


class WatchRunner:
    """Runs the loops over an attached cluster until `duration` (or forever) and says what
    happened; the same object drives the console and the headless run."""

    def __init__(self, runtime: Runtime, *, duration: float | None = None) -> None:
        self.runtime = runtime
        self.duration = duration
        self.events: list[Event] = []
        self._stop = asyncio.Event()
        self._remove: Callable[[], None] | None = None

    def advance(self) -> None:
        """Nothing to advance to: a watch has no chapters."""

    def stop(self) -> None:
        self._stop.set()

    def _record(self, event: Event) -> None:
        if event.on_timeline:
            self.events.append(event)

    async def run(self) -> RunOutcome:
        self._remove = self.runtime.bus.add_listener(self._record)
        runtime = self.runtime
        outcome = RunOutcome(ok=False)
        try:
            await runtime.start()
            runtime.start_loops()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.duration):
                    await self._stop.wait()
            outcome = RunOutcome(ok=True, summary=self.summary())
            outcome.summary = await runtime.finish(
                ok=True, summary=outcome.summary, reason="the watch ended"
            )
        except asyncio.CancelledError:
            outcome = RunOutcome(ok=True, summary=self.summary())
            with contextlib.suppress(Exception):
                await asyncio.shield(
                    runtime.finish(ok=True, summary=outcome.summary, reason="the watch stopped")
                )
            raise
        except Exception as exc:
            log.exception("watch failed")
            outcome = RunOutcome(ok=False, summary={**self.summary(), "problems": [str(exc)]})
            outcome.summary = await runtime.finish(
                ok=False, summary=outcome.summary, reason=f"failed: {exc}"
            )
        finally:
            await asyncio.shield(runtime.stop())
            if self._remove is not None:
                self._remove()
        return outcome

    def summary(self) -> dict[str, Any]:
        opened = [e for e in self.events if isinstance(e, TicketOpened)]
        return {
            "scenario": "watch",
            "subject": self.runtime.plan.subject,
            "run_id": self.runtime.run_id,
            "tickets_opened": len(opened),
            "tickets_resolved": sum(isinstance(e, TicketResolved) for e in self.events),
            "fired": sorted({e.invariant for e in opened}),
            "proposed": sum(isinstance(e, ActionProposed) for e in self.events),
            "actions": [
                {"action": e.action, "state": e.state}
                for e in self.events
                if isinstance(e, ActionVerified | ActionNotVerified | ActionFailed)
            ],
            # Per incident: detected, diagnosed, fixed or mitigated after how long.
            SUMMARY_KEY: [s.to_dict() for s in Scoreboard.of(self.events).incidents()],
            "duration_s": round(self.runtime.bus.elapsed(), 3),
            "problems": [],
        }
