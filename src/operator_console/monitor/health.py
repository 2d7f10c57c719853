"""Waiting until a subject is healthy: every source answers and no invariant is violated, as
a stack that was just brought up must be before a scenario's story starts."""

from __future__ import annotations

import asyncio
import time

from operator_console.contract import Subject

STEP_S = 1.0


async def wait_healthy(
    subject: Subject, *, timeout_s: float, read_timeout_s: float, step_s: float = STEP_S
) -> float:
    """Seconds until one observation is clean; RuntimeError naming what is still wrong."""
    started = time.monotonic()
    wrong = "no observation yet"
    while True:
        try:
            async with asyncio.timeout(read_timeout_s):
                observation = await subject.observe()
        except Exception as exc:
            wrong = f"observing failed: {exc}"
        else:
            failed = [f"{s.name}: {s.reason}" for s in observation.failed_sources]
            violated = [
                f"{v.invariant} on {v.target}"
                for invariant in subject.invariants
                for v in invariant.check(observation)
            ]
            if not failed and not violated:
                return time.monotonic() - started
            wrong = "; ".join([*violated, *failed][:4])
        if time.monotonic() - started > timeout_s:
            raise RuntimeError(f"the stack did not become healthy within {timeout_s:g} s: {wrong}")
        await asyncio.sleep(step_s)
