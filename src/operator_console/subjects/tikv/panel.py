"""The cluster panel of a TiKV cluster: PD members (leader marked, health), then every store
with PD's own state name, its last heartbeat's age, leaders, regions and disk."""

from __future__ import annotations

from operator_console.contract import ClusterView, Column, PanelRow, Tone
from operator_console.subjects.tikv.spec import ThresholdSpec
from operator_console.subjects.tikv.state import (
    DISCONNECTED,
    DOWN,
    OFFLINE,
    TOMBSTONE,
    UP,
    MemberView,
    StoreView,
    TikvState,
)

COLUMNS = (
    Column("leaders", "leaders"),
    Column("regions", "regions"),
    Column("disk", "used / capacity"),
    Column("qps", "QPS"),
    Column("p99", "gRPC p99"),
    Column("notes", "notes"),
)
STORE_TONES: dict[str, Tone] = {
    UP: "ok",
    DISCONNECTED: "warning",
    OFFLINE: "warning",
    DOWN: "error",
    TOMBSTONE: "muted",
}
_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def size(value: int | None) -> str:
    """Bytes in PD's binary units, three significant digits ("612 GiB")."""
    if value is None:
        return "-"
    number = float(value)
    for unit in _UNITS:
        if number < 1024 or unit == _UNITS[-1]:
            return f"{number:.3g} {unit}"
        number /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def disk(view: StoreView) -> str:
    ratio = view.available_ratio
    free = f", {ratio:.0%} free" if ratio is not None else ""
    return f"{size(view.used_bytes)} / {size(view.capacity_bytes)}{free}"


def _member_row(member: MemberView, state: TikvState) -> PanelRow:
    health = {True: "healthy", False: "unhealthy", None: "unknown"}[member.healthy]
    tone: Tone = {True: "ok", False: "error", None: "muted"}[member.healthy]  # type: ignore[assignment]
    notes = []
    if state.answered_member == member.name:
        notes.append(f"answers the console ({state.answered_role})")
    if member.up is False:
        notes.append("Prometheus cannot scrape it")
    return PanelRow(
        target=member.name,
        role="pd leader" if member.leader else "pd",
        state=health,
        tone=tone,
        health=member.version,
        cells={"notes": "; ".join(notes)},
    )


def _store_row(view: StoreView, t: ThresholdSpec) -> PanelRow:
    notes = []
    if view.evicted:
        notes.append("leaders evicted (evict-leader-scheduler)")
    if view.slow_score >= t.slow_score:
        notes.append(f"slow score {view.slow_score}")
    if view.down_peers:
        notes.append(f"{view.down_peers} down peers")
    if view.pending_peers:
        notes.append(f"{view.pending_peers} pending peers")
    ratio = view.available_ratio
    if ratio is not None and ratio < t.disk_available_ratio:
        notes.append(f"disk {1 - ratio:.0%} full")
    m = view.metrics
    if m is not None and m.up is False:
        notes.append("Prometheus cannot scrape it")
    return PanelRow(
        target=view.target,
        role="tikv",
        state=view.state_name,
        tone=STORE_TONES.get(view.state_name, "warning"),
        health=f"heartbeat {age(view.heartbeat_age_s)}",
        cells={
            "leaders": str(view.leaders),
            "regions": str(view.regions),
            "disk": disk(view),
            "qps": f"{m.qps:.0f}" if m and m.qps is not None else "-",
            "p99": f"{m.grpc_p99_ms:.1f} ms" if m and m.grpc_p99_ms is not None else "-",
            "notes": "; ".join(notes),
        },
    )


def cluster_view(state: TikvState, t: ThresholdSpec) -> ClusterView:
    rows = [_member_row(m, state) for m in state.members]
    rows += [_store_row(v, t) for v in sorted(state.stores.values(), key=lambda v: v.id)]
    return ClusterView(rows=tuple(rows), columns=COLUMNS, note=state.summary())
