"""The etcd cluster panel: one row per member with its raft position, database and alarms."""

from __future__ import annotations

from operator_console.contract import ClusterView, Column, PanelRow, Tone
from operator_console.subjects.etcd.state import EtcdState, MemberView

TONES: dict[str, Tone] = {
    "up": "ok",
    "no-leader": "warning",
    "unhealthy": "warning",
    "unreadable": "warning",
    "paused": "error",
    "down": "error",
}
PANEL_COLUMNS = (
    Column("term", "term"),
    Column("index", "raft index"),
    Column("lag", "apply lag"),
    Column("db", "db / quota"),
    Column("alarms", "alarms"),
)
MiB = 1024 * 1024


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / MiB:.1f}"


def _db(member: MemberView) -> str:
    if member.db_size is None:
        return "-"
    if not member.quota_bytes:
        return f"{_mib(member.db_size)} MiB"
    ratio = member.db_size / member.quota_bytes
    return f"{_mib(member.db_size)}/{_mib(member.quota_bytes)} MiB {ratio:.0%}"


def _health(member: MemberView) -> str:
    if member.health is None:
        return (
            "-"
            if member.health_pending_ms is None
            else f"waiting {member.health_pending_ms:.0f} ms"
        )
    ms = f" {member.health_ms:.0f} ms" if member.health_ms is not None else ""
    return f"ok{ms}" if member.health else f"{member.health_reason or 'false'}{ms}"


def _role(member: MemberView, state: EtcdState) -> str:
    if not member.status_ok:
        return "-"
    if member.name == state.leader:
        return "★ leader"
    return "follower" if member.leader_id else "candidate?"


def cluster_view(state: EtcdState) -> ClusterView:
    """Each member as the panel shows it; the note says who leads and whether writes can work."""
    rows = []
    for name, member in state.members.items():
        lag = member.apply_lag
        rows.append(
            PanelRow(
                target=name,
                role=_role(member, state),
                state=member.state,
                tone=TONES.get(member.state, "muted"),
                health=_health(member),
                cells={
                    "term": str(member.raft_term) if member.raft_term is not None else "-",
                    "index": str(member.raft_index) if member.raft_index is not None else "-",
                    "lag": str(lag) if lag is not None else "-",
                    "db": _db(member),
                    "alarms": ", ".join(member.alarms) or (member.error or "")[:60],
                },
            )
        )
    up = len(state.answering)
    if state.leader:
        note = f"leader {state.leader} at term {state.term}; {up} of {state.size} members answer"
    else:
        note = f"no leader; {up} of {state.size} members answer (quorum {state.quorum})"
    if state.nospace:
        note += "; NOSPACE: writes refused"
    return ClusterView(rows=tuple(rows), columns=PANEL_COLUMNS, note=note)
