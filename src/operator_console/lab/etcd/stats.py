"""What the etcd workload saw over a window: counts, errors and latency, in total and per member.

An observer asks for the last few seconds at once (not a per-second sample), so a single slow
second does not decide a p99 on its own.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


def percentile(values: Sequence[float], pct: float) -> float | None:
    """Nearest-rank percentile, or None when there are no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = math.ceil(pct / 100.0 * len(ordered))
    return ordered[max(rank, 1) - 1]


class OpLike(Protocol):
    @property
    def at(self) -> float: ...
    @property
    def kind(self) -> str: ...
    @property
    def member(self) -> str | None: ...
    @property
    def ok(self) -> bool: ...
    @property
    def latency_ms(self) -> float | None: ...
    @property
    def error(self) -> str: ...


@dataclass(slots=True)
class MemberWindow:
    """The requests one member answered (or failed) in the window."""

    ops: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)

    @property
    def p99_ms(self) -> float | None:
        return percentile(self.latencies, 99)

    def to_dict(self) -> dict[str, Any]:
        p99 = self.p99_ms
        return {
            "ops": self.ops,
            "errors": self.errors,
            "p99_ms": round(p99, 1) if p99 is not None else None,
        }


@dataclass(slots=True)
class WindowStats:
    """Every request that finished in the last `window_s` seconds."""

    window_s: float
    counts: Counter[str] = field(default_factory=Counter)
    errors: int = 0
    error_kinds: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    per_member: dict[str, MemberWindow] = field(default_factory=dict)

    @property
    def ok(self) -> int:
        return sum(self.counts.values())

    @property
    def finished(self) -> int:
        return self.ok + self.errors

    @property
    def p99_ms(self) -> float | None:
        return percentile(self.latencies, 99)

    @property
    def p50_ms(self) -> float | None:
        return percentile(self.latencies, 50)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able totals and per member (no raw latencies), for the clients process's API."""
        return {
            "window_s": round(self.window_s, 3),
            "counts": dict(self.counts),
            "errors": self.errors,
            "error_kinds": dict(self.error_kinds),
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "per_member": {name: w.to_dict() for name, w in sorted(self.per_member.items())},
        }


@dataclass(frozen=True, slots=True)
class WindowSummary:
    """A window as the clients process reports it: what the observer judges latency and
    errors by, without the raw latencies."""

    window_s: float
    counts: dict[str, int]
    errors: int
    error_kinds: dict[str, int]
    p50_ms: float | None
    p99_ms: float | None
    per_member: dict[str, dict[str, Any]]

    @property
    def ok(self) -> int:
        return sum(self.counts.values())

    @property
    def finished(self) -> int:
        return self.ok + self.errors

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WindowSummary:
        return cls(
            window_s=float(data["window_s"]),
            counts={str(k): int(v) for k, v in data["counts"].items()},
            errors=int(data["errors"]),
            error_kinds={str(k): int(v) for k, v in data["error_kinds"].items()},
            p50_ms=data.get("p50_ms"),
            p99_ms=data.get("p99_ms"),
            per_member={str(k): dict(v) for k, v in data["per_member"].items()},
        )


def window_stats(ops: Iterable[OpLike], since: float, until: float) -> WindowStats:
    """Tally the requests that finished in (since, until]."""
    stats = WindowStats(window_s=until - since)
    for op in ops:
        if not since < op.at <= until:
            continue
        member = stats.per_member.setdefault(op.member or "none", MemberWindow())
        if op.ok:
            stats.counts[op.kind] += 1
            member.ops += 1
            if op.latency_ms is not None:
                stats.latencies.append(op.latency_ms)
                member.latencies.append(op.latency_ms)
        else:
            stats.errors += 1
            stats.error_kinds[op.error] += 1
            member.errors += 1
    return stats
