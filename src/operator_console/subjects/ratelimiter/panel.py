"""How the rate limiter looks in the console's cluster panel, and when a drained node could serve
again (the cause a drain leaves behind)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from operator_console.contract import ClusterView, Column, Condition, PanelRow, Tone

if TYPE_CHECKING:
    from operator_console.subjects.ratelimiter.observer import NodeView, RateLimiterState

TONES: dict[str, Tone] = {
    "up": "ok",
    "drained": "muted",
    "degraded": "warning",
    "paused": "warning",
    "down": "error",
    "unreachable": "error",
}
PANEL_COLUMNS = (Column("share", "share"), Column("config", "config"), Column("notes", "notes"))


def _ms(value: float | None) -> str:
    return f"{value:.1f} ms" if value is not None else "-"


def cluster_view(state: RateLimiterState) -> ClusterView:
    """Each node and the store as the panel shows them."""
    per_target = state.workload.per_target if state.workload is not None else {}
    offered = {name: float(stats.get("offered") or 0) for name, stats in per_target.items()}
    total = sum(offered.values())
    rows = []
    for name, node in state.nodes.items():
        notes = [k for k, v in node.failpoints.items() if v]
        if node.store_reachable is False:
            notes.append("no store")
        rows.append(
            PanelRow(
                target=name,
                role="node",
                state=node.state,
                tone=TONES.get(node.state, "muted"),
                health=_ms(node.health_latency_ms),
                cells={
                    "share": f"{offered.get(name, 0.0) / total:.0%}" if total else "-",
                    "config": f"v{node.config_version}" if node.config_version is not None else "-",
                    "notes": ", ".join(notes),
                },
            )
        )
    store = state.store
    rows.append(
        PanelRow(
            target="store",
            role="store",
            state=store.state,
            tone=TONES.get(store.state, "muted"),
            health=_ms(store.latency_ms),
            cells={
                "share": "-",
                "config": f"v{store.config_version}" if store.config_version is not None else "-",
                "notes": store.error or "",
            },
        )
    )
    up = sum(1 for node in state.nodes.values() if node.state in ("up", "drained"))
    note = f"{up} of {len(state.nodes)} nodes serving, store {store.state}"
    return ClusterView(rows=tuple(rows), columns=PANEL_COLUMNS, note=note)


# A node's health check pings the store; slower than this, its link to the store is slow.
SLOW_HEALTH_MS = 100.0


def node_serving(node: NodeView) -> Condition:
    """Whether a node could serve again (what a drain hides): it answers, says it is healthy,
    reaches the store, and its health check (which pings the store) is fast."""
    if not node.reachable:
        return Condition(True, f"{node.name} does not answer: {node.error}")
    if node.store_reachable is False:
        return Condition(True, f"{node.name} cannot reach the store: {node.store_error}")
    if node.health_latency_ms is not None and node.health_latency_ms > SLOW_HEALTH_MS:
        return Condition(
            True,
            f"{node.name}'s store link is still slow: its health check takes "
            f"{node.health_latency_ms:.0f} ms",
        )
    if node.healthy is False:
        return Condition(True, f"{node.name} reports itself unhealthy")
    return Condition(False, f"{node.name} answers healthy in {node.health_latency_ms or 0:.0f} ms")
