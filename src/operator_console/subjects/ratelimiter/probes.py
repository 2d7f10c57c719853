"""What the rate limiter runbook's hypotheses share: their probes and their base class."""

from __future__ import annotations

from operator_console.contract import (
    Probe,
    RunbookHypothesis,
)

STORE = "store"
DEAD = ("killed", "exited", "stopped")
LOG_LINES = 40
# Heartbeats are written about once a second; clocks further apart than this really differ.
CLOCK_TOLERANCE_MS = 2000
DEFAULT_SLO_MS = 250.0
SLOW_STORE_PING_MS = 100.0

OBSERVE = Probe("observe")
STORE_DETAIL = Probe("store_detail")


def node_detail(node: str) -> Probe:
    return Probe("node_detail", {"node": node})


def node_metrics(node: str) -> Probe:
    return Probe("node_metrics", {"node": node})


def log_tail(process: str) -> Probe:
    return Probe("tail_log", {"process": process, "lines": LOG_LINES})


class _Hypothesis(RunbookHypothesis):
    default_probes = (OBSERVE,)
