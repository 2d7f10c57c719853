"""Reading an etcd member's /metrics: the few families an operator looks at, read fast.

A member's exposition is ~150 KB (most of it gRPC counters per method and code); the observer
reads it every second from every member, so lines are filtered by name before they are parsed
instead of running a full Prometheus parser over all of them.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

GAUGES = {
    "etcd_server_has_leader": "has_leader",
    "etcd_server_is_leader": "is_leader",
    "etcd_server_leader_changes_seen_total": "leader_changes",
    "etcd_server_proposals_failed_total": "proposals_failed",
    "etcd_server_proposals_pending": "proposals_pending",
    "etcd_server_proposals_committed_total": "proposals_committed",
    "etcd_server_proposals_applied_total": "proposals_applied",
    "etcd_mvcc_db_total_size_in_bytes": "db_size",
    "etcd_mvcc_db_total_size_in_use_in_bytes": "db_size_in_use",
    "etcd_server_quota_backend_bytes": "quota_bytes",
    "etcd_server_heartbeat_send_failures_total": "heartbeat_send_failures",
    "etcd_server_slow_apply_total": "slow_applies",
    "etcd_server_slow_read_indexes_total": "slow_read_indexes",
    "etcd_mvcc_put_total": "puts",
    "etcd_mvcc_range_total": "ranges",
    "etcd_mvcc_delete_total": "deletes",
    "etcd_mvcc_txn_total": "txns",
}
PER_PEER = {
    "etcd_network_peer_sent_failures_total": ("To", "sent_failures"),
    "etcd_network_peer_received_failures_total": ("From", "received_failures"),
}
HISTOGRAMS = {
    "etcd_disk_wal_fsync_duration_seconds": "wal_fsync",
    "etcd_disk_backend_commit_duration_seconds": "backend_commit",
}
PEER_RTT = "etcd_network_peer_round_trip_time_seconds"
GRPC_HANDLED = "grpc_server_handled_total"
_PREFIXES = (
    tuple(GAUGES) + tuple(PER_PEER) + tuple(HISTOGRAMS) + (PEER_RTT, GRPC_HANDLED, "etcd_server_")
)
_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def _labels(text: str | None) -> dict[str, str]:
    return dict(_LABEL.findall(text)) if text else {}


@dataclass(slots=True)
class MemberMetrics:
    """One scrape of one member, reduced to what the observer and the tools use."""

    values: dict[str, float] = field(default_factory=dict)
    sent_failures: dict[str, float] = field(default_factory=dict)  # by peer member ID (hex)
    received_failures: dict[str, float] = field(default_factory=dict)
    # Peer round trip per peer ID: (sum of seconds, count), from etcd's prober histogram.
    peer_rtt: dict[str, tuple[float, float]] = field(default_factory=dict)
    # Cumulative buckets (le -> count) per histogram name.
    buckets: dict[str, dict[float, float]] = field(default_factory=dict)
    grpc_errors: float = 0.0  # requests etcd answered with a non-OK gRPC code
    server_id: str | None = None
    version: str | None = None

    def get(self, key: str) -> float | None:
        return self.values.get(key)

    def peer_rtt_ms(self) -> dict[str, float]:
        """Mean peer round trip etcd's prober recorded, per peer ID, in ms."""
        return {
            peer: round(total / count * 1000, 2)
            for peer, (total, count) in self.peer_rtt.items()
            if count > 0
        }


def parse_metrics(text: str) -> MemberMetrics:
    """The families in GAUGES, PER_PEER, HISTOGRAMS and the peer round trip, from one scrape."""
    out = MemberMetrics()
    rtt_sum: dict[str, float] = {}
    rtt_count: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith(_PREFIXES):
            continue
        match = _LINE.match(line)
        if match is None:
            continue
        name, label_text, raw = match.groups()
        try:
            value = float(raw)
        except ValueError:
            continue
        if name in GAUGES:
            out.values[GAUGES[name]] = value
        elif name in PER_PEER:
            label, attr = PER_PEER[name]
            peer = _labels(label_text).get(label, "?")
            getattr(out, attr)[peer] = value
        elif name == GRPC_HANDLED:
            code = _labels(label_text).get("grpc_code", "OK")
            if code != "OK" and value:
                out.grpc_errors += value
        elif name.endswith("_bucket") and name[: -len("_bucket")] in HISTOGRAMS:
            le = _labels(label_text).get("le", "+Inf")
            bound = math.inf if le in ("+Inf", "Inf") else float(le)
            out.buckets.setdefault(HISTOGRAMS[name[: -len("_bucket")]], {})[bound] = value
        elif name == f"{PEER_RTT}_sum":
            rtt_sum[_labels(label_text).get("To", "?")] = value
        elif name == f"{PEER_RTT}_count":
            rtt_count[_labels(label_text).get("To", "?")] = value
        elif name == "etcd_server_id":
            out.server_id = _labels(label_text).get("server_id")
        elif name == "etcd_server_version":
            out.version = _labels(label_text).get("server_version")
    out.peer_rtt = {peer: (rtt_sum.get(peer, 0.0), count) for peer, count in rtt_count.items()}
    return out


def bucket_quantile(
    now: Mapping[float, float], before: Mapping[float, float], q: float
) -> tuple[float | None, int]:
    """The q-quantile (upper bucket bound, seconds) of what a histogram saw between two scrapes,
    and how many observations that was."""
    bounds = sorted(now)
    if not bounds:
        return None, 0
    total = now[bounds[-1]] - before.get(bounds[-1], 0.0)
    if total <= 0:
        return None, 0
    for le in bounds:
        if now[le] - before.get(le, 0.0) >= q * total:
            return le, int(total)
    return bounds[-1], int(total)


class MetricsHistory:
    """Per member, the scrapes of the last `window_s`: counter growth and histogram quantiles
    over that window, with a member restart (its counters begin again) handled."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._scrapes: dict[str, deque[tuple[float, MemberMetrics]]] = {}

    def add(self, member: str, at: float, metrics: MemberMetrics) -> None:
        history = self._scrapes.setdefault(member, deque())
        last = history[-1][1] if history else None
        if last is not None and _restarted(last, metrics):
            history.clear()
        history.append((at, metrics))
        while len(history) > 1 and at - history[0][0] > self.window_s:
            history.popleft()

    def oldest(self, member: str, within_s: float | None = None) -> MemberMetrics | None:
        """The oldest scrape kept (or the oldest no older than `within_s`)."""
        history = self._scrapes.get(member)
        if not history:
            return None
        if within_s is None:
            return history[0][1]
        newest = history[-1][0]
        for at, metrics in history:
            if newest - at <= within_s:
                return metrics
        return history[-1][1]

    def growth(self, member: str, key: str, within_s: float | None = None) -> float | None:
        """How much a counter grew over the window (None with fewer than two scrapes)."""
        history = self._scrapes.get(member)
        if not history or len(history) < 2:
            return None
        first = self.oldest(member, within_s)
        last = history[-1][1]
        if first is None or first is last:
            return None
        a, b = first.get(key), last.get(key)
        return None if a is None or b is None else max(0.0, b - a)

    def quantile_ms(
        self, member: str, histogram: str, q: float, within_s: float | None = None
    ) -> float | None:
        history = self._scrapes.get(member)
        if not history:
            return None
        first = self.oldest(member, within_s)
        last = history[-1][1]
        now = last.buckets.get(histogram, {})
        before = first.buckets.get(histogram, {}) if first is not None and first is not last else {}
        value, count = bucket_quantile(now, before, q)
        if value is None or count == 0:
            return None
        return math.inf if math.isinf(value) else round(value * 1000, 2)

    def forget(self, members: set[str]) -> None:
        for name in list(self._scrapes):
            if name not in members:
                del self._scrapes[name]


def _restarted(last: MemberMetrics, now: MemberMetrics) -> bool:
    """A counter went down: the member restarted and its counters began again."""
    for key in ("proposals_committed", "puts", "ranges"):
        a, b = last.get(key), now.get(key)
        if a is not None and b is not None and b < a:
            return True
    return False


def summary(metrics: MemberMetrics) -> dict[str, Any]:
    """The metrics as a tool shows them: plain names, numbers rounded."""
    values = {
        k: (int(v) if float(v).is_integer() else round(v, 3)) for k, v in metrics.values.items()
    }
    return {
        **values,
        "peer_sent_failures": dict(metrics.sent_failures),
        "peer_received_failures": dict(metrics.received_failures),
        "peer_round_trip_ms": metrics.peer_rtt_ms(),
        "grpc_errors": metrics.grpc_errors,
        "server_id": metrics.server_id,
        "version": metrics.version,
    }
