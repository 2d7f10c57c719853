"""The rate limiter runbook as testable hypotheses: each names its probes and judges their results.

A hypothesis recommends an action only from what the tools showed; healthy evidence scores 0.
"""

from __future__ import annotations

from operator_console.contract import ActionCatalog, Hypothesis
from operator_console.subjects.ratelimiter.hypotheses_nodes import (
    NodeNetworkPartition,
    NodeProcessDied,
    NodeProcessPaused,
    NodeStoreConnection,
    NodeStoreLink,
    StoreDead,
    StoreHung,
    StorePaused,
)
from operator_console.subjects.ratelimiter.hypotheses_traffic import (
    ClockSkew,
    ClusterWideErrors,
    DriftCutOff,
    FailOpen,
    NodeDegraded,
    RefreshLagging,
    RefreshStuck,
    SlowLink,
    SourceFailing,
    SourceRecovered,
    StaleLimit,
    StoreSlow,
)
from operator_console.subjects.ratelimiter.probes import (
    OBSERVE,
    STORE_DETAIL,
    _Hypothesis,
    log_tail,
    node_detail,
    node_metrics,
)

__all__ = [
    "OBSERVE",
    "STORE_DETAIL",
    "NodeDegraded",
    "hypotheses_for",
    "log_tail",
    "node_detail",
    "node_metrics",
]

RUNBOOK: dict[str, tuple[type[_Hypothesis], ...]] = {
    "node_down": (NodeProcessDied, NodeProcessPaused, NodeNetworkPartition),
    "store_unreachable": (StorePaused, StoreDead, StoreHung, NodeStoreLink, NodeStoreConnection),
    "over_limit": (ClockSkew, FailOpen, StaleLimit),
    "config_drift": (RefreshStuck, RefreshLagging, DriftCutOff),
    "latency_slo": (SlowLink, StoreSlow),
    "store_link_slow": (SlowLink, StoreSlow),
    "error_rate": (NodeDegraded, ClusterWideErrors),
    "observation_failed": (SourceFailing, SourceRecovered),
}


def hypotheses_for(invariant: str, catalog: ActionCatalog) -> list[Hypothesis]:
    """The runbook's hypotheses for one invariant (none for an invariant it does not know)."""
    return [cls(catalog) for cls in RUNBOOK.get(invariant, ())]
