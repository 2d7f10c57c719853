"""/metrics of TiKV and PD as two captures 15 s apart, in each server's exposition format.

TiKV (rust-prometheus) writes label pairs sorted by name, `le` last, floats in Rust's
Display form (never an exponent); PD (client_golang) writes sorted labels and floats
in strconv's 'g' form ("1.099511627776e+12"). Metric names, label names and buckets
come from tikv/tikv (src/server/metrics.rs, components/raftstore/src/store/metrics.rs,
components/pd_client/src/metrics.rs) and tikv/pd (pkg/statistics/metrics.go,
pkg/statistics/store_collection.go, server/metrics.go, pkg/member/metrics.go).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from tests.subjects.tikv.wire.cluster import Situation, StoreModel
from tests.subjects.tikv.wire.pd_wire import region_checks

INTERVAL_S = 15
UPTIME_S = 273_600  # how long the counters had been counting at the first capture
# exponential_buckets(5e-5, 2.0, 22): tikv_grpc_msg_duration_seconds
GRPC_BUCKETS = [Decimal("0.00005") * 2**i for i in range(22)]
# exponential_buckets(0.00001, 2.0, 26): apply/append log duration
RAFT_BUCKETS = [Decimal("0.00001") * 2**i for i in range(26)]
# prometheus.ExponentialBuckets(0.0005, 2, 13): pd_server_handle_tso_duration_seconds
TSO_BUCKETS = [Decimal("0.0005") * 2**i for i in range(13)]
SHAPE = (0.05, 0.15, 0.5, 0.2, 0.07, 0.02, 0.01)  # share of requests per bucket around center


@dataclass(frozen=True)
class GrpcLoad:
    """Requests per second of one gRPC type on one store, and where its latency sits."""

    type: str
    per_s: int
    center: int  # bucket index holding half the requests


TIKV_LOAD: dict[str, tuple[GrpcLoad, ...]] = {
    "tikv-0": (
        GrpcLoad("kv_get", 600, 3),
        GrpcLoad("kv_prewrite", 120, 6),
        GrpcLoad("kv_commit", 120, 5),
        GrpcLoad("coprocessor", 60, 7),
        GrpcLoad("kv_gc", 2, 13),
    ),
    "tikv-1": (
        GrpcLoad("kv_get", 540, 3),
        GrpcLoad("kv_prewrite", 110, 6),
        GrpcLoad("kv_commit", 110, 5),
        GrpcLoad("coprocessor", 40, 7),
        GrpcLoad("kv_gc", 2, 13),
    ),
    # tikv-2's disk is slower: every type sits two buckets higher.
    "tikv-2": (
        GrpcLoad("kv_get", 660, 5),
        GrpcLoad("kv_prewrite", 130, 8),
        GrpcLoad("kv_commit", 130, 7),
        GrpcLoad("coprocessor", 80, 9),
        GrpcLoad("kv_gc", 2, 14),
    ),
}
# (per second, center bucket) of apply and append log durations.
RAFT_LOAD = {
    "tikv-0": ((1200, 5), (800, 7)),
    "tikv-1": ((1100, 5), (760, 7)),
    "tikv-2": ((1300, 6), (840, 9)),
}


def spread(total: int, center: int, size: int) -> list[int]:
    """`total` per second over buckets around `center`, integers summing to `total`."""
    counts = [0] * size
    shares = [(center - 2 + i, share) for i, share in enumerate(SHAPE)]
    for index, share in shares:
        counts[min(max(index, 0), size - 1)] += int(total * share)
    counts[center] += total - sum(counts)
    return counts


def rust_float(value: Decimal | float) -> str:
    """Rust's f64 Display: the shortest digits, never an exponent."""
    number = Decimal(repr(value)) if isinstance(value, float) else value.normalize()
    text = format(number, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def go_float(value: float) -> str:
    """strconv.AppendFloat(f, 'g', -1, 64), as client_golang's text format writes values."""
    if value == 0:
        return "0"
    _, digit_tuple, exponent = Decimal(repr(abs(value))).normalize().as_tuple()
    digits = "".join(str(d) for d in digit_tuple)
    exp = int(exponent) + len(digits) - 1
    sign = "-" if value < 0 else ""
    if exp < -4 or exp >= 6:  # shortest 'g' switches to %e at an exponent of 6
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'+' if exp >= 0 else '-'}{abs(exp):02d}"
    return sign + format(Decimal(repr(abs(value))).normalize(), "f")


def _labels(pairs: dict[str, str]) -> str:
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{v}"' for k, v in pairs.items()) + "}"


class Exposition:
    """Collects metric families and writes them in one server's text format."""

    def __init__(self, float_form: object) -> None:
        self.lines: list[str] = []
        self.fmt = float_form

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]

    def sample(self, name: str, labels: dict[str, str], value: float | int) -> None:
        shown = str(value) if isinstance(value, int) else self.fmt(value)  # type: ignore[operator]
        self.lines.append(f"{name}{_labels(labels)} {shown}")

    def histogram(
        self,
        name: str,
        labels: dict[str, str],
        bounds: list[Decimal],
        per_s: list[int],
        elapsed_s: int,
        le_form: object,
    ) -> None:
        cumulative = 0
        total_sum = Decimal(0)
        for i, bound in enumerate(bounds):
            cumulative += per_s[i] * elapsed_s
            lower = bounds[i - 1] if i else Decimal(0)
            total_sum += (lower + bound) / 2 * per_s[i] * elapsed_s
            le = le_form(bound)  # type: ignore[operator]
            self.sample(f"{name}_bucket", {**labels, "le": le}, cumulative)
        self.sample(f"{name}_bucket", {**labels, "le": "+Inf"}, cumulative)
        self.sample(f"{name}_sum", labels, float(total_sum))
        self.sample(f"{name}_count", labels, cumulative)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def tikv_metrics(s: Situation, store: StoreModel, tikv_version: str, at_s: int) -> str:
    """One TiKV's /metrics `at_s` seconds after the first capture."""
    elapsed = UPTIME_S + at_s
    out = Exposition(rust_float)
    with_priority = not tikv_version.startswith("7.")
    out.family(
        "tikv_grpc_msg_duration_seconds", "histogram", "Bucketed histogram of grpc server messages"
    )
    for load in TIKV_LOAD[store.name]:
        labels = {"priority": "medium", "type": load.type} if with_priority else {"type": load.type}
        out.histogram(
            "tikv_grpc_msg_duration_seconds",
            labels,
            GRPC_BUCKETS,
            spread(load.per_s, load.center, len(GRPC_BUCKETS)),
            elapsed,
            rust_float,
        )
    apply_load, append_load = RAFT_LOAD[store.name]
    out.family(
        "tikv_raftstore_apply_log_duration_seconds",
        "histogram",
        "Bucketed histogram of peer applying log duration.",
    )
    out.histogram(
        "tikv_raftstore_apply_log_duration_seconds",
        {},
        RAFT_BUCKETS,
        spread(apply_load[0], apply_load[1], len(RAFT_BUCKETS)),
        elapsed,
        rust_float,
    )
    out.family(
        "tikv_raftstore_append_log_duration_seconds",
        "histogram",
        "Bucketed histogram of peer appending log duration.",
    )
    out.histogram(
        "tikv_raftstore_append_log_duration_seconds",
        {},
        RAFT_BUCKETS,
        spread(append_load[0], append_load[1], len(RAFT_BUCKETS)),
        elapsed,
        rust_float,
    )
    out.family("tikv_store_size_bytes", "gauge", "Size of storage.")
    for kind, value in (
        ("available", store.available),
        ("capacity", store.capacity),
        ("used", store.used),
    ):
        out.sample("tikv_store_size_bytes", {"type": kind}, value)
    leaders = sum(1 for r in s.regions if r.leader_store == store.id)
    peers = sum(1 for r in s.regions if r.peer_on(store.id) is not None)
    out.family(
        "tikv_raftstore_region_count", "gauge", "Number of regions collected in region_collector"
    )
    out.sample("tikv_raftstore_region_count", {"type": "leader"}, leaders)
    out.sample("tikv_raftstore_region_count", {"type": "region"}, peers)
    out.family(
        "process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds."
    )
    out.sample("process_cpu_seconds_total", {}, 2 * elapsed)
    return out.text()


REGION_STATUS_TYPES = (
    "miss-peer-region-count",
    "extra-peer-region-count",
    "down-peer-region-count",
    "pending-peer-region-count",
    "offline-peer-region-count",
    "learner-peer-region-count",
    "empty-region-count",
    "oversized-region-count",
    "undersized-region-count",
    "witness-leader-region-count",
)
STORE_STATUS_TYPES = (
    "store_up_count",
    "store_disconnected_count",
    "store_slow_count",
    "store_down_count",
    "store_unhealth_count",
    "store_offline_count",
    "store_tombstone_count",
    "store_low_space_count",
    "store_preparing_count",
    "store_serving_count",
    "store_removing_count",
    "store_removed_count",
)


def _store_status(s: Situation, store: StoreModel) -> dict[str, int]:
    """pkg/statistics/store_collection.go observeStoreStatus (v8.5)."""
    counts = dict.fromkeys(STORE_STATUS_TYPES, 0)
    if store.state_name == "Down":
        counts["store_down_count"] = 1
    elif store.id in s.store_ids_unhealthy:
        counts["store_unhealth_count"] = 1
    elif store.state_name == "Disconnected":
        counts["store_disconnected_count"] = 1
    else:
        counts["store_up_count"] = 1
    counts["store_serving_count"] = 1
    if store.state_name != "Down" and store.id in s.low_space_stores:
        counts["store_low_space_count"] = 1
    return counts


def pd_metrics(s: Situation, name: str, pd_version: str, at_s: int) -> str:
    """One PD member's /metrics; only the leader runs the cluster and counts regions."""
    elapsed = UPTIME_S + at_s
    leader = name == s.leader
    out = Exposition(go_float)
    out.family("pd_regions_status", "gauge", "Status of the regions.")
    checks = region_checks(s) if leader else {}
    for kind in REGION_STATUS_TYPES:
        listed = checks.get(kind.removesuffix("-region-count"), [])
        out.sample("pd_regions_status", {"type": kind}, len(listed))
    if leader:
        out.family("pd_cluster_status", "gauge", "Status of the cluster.")
        per_store = not pd_version.startswith("v7.")
        totals = dict.fromkeys(STORE_STATUS_TYPES, 0)
        for store in s.stores:
            status = _store_status(s, store)
            for kind, value in status.items():
                totals[kind] += value
                if per_store:
                    out.sample(
                        "pd_cluster_status",
                        {"engine": "tikv", "store": str(store.id), "type": kind},
                        value,
                    )
        if not per_store:
            for kind, value in totals.items():
                out.sample("pd_cluster_status", {"type": kind}, value)
        out.family("service_member_role", "gauge", "The leader/primary of services")
        out.sample("service_member_role", {"service": "PD"}, 1)
    tso_per_s = 1500 if leader else 0
    out.family(
        "pd_server_handle_tso_duration_seconds",
        "histogram",
        "Bucketed histogram of processing time (s) of handled tso requests.",
    )
    out.histogram(
        "pd_server_handle_tso_duration_seconds",
        {},
        TSO_BUCKETS,
        spread(tso_per_s, 1, len(TSO_BUCKETS)),
        elapsed,
        lambda b: go_float(float(b)),
    )
    out.family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.")
    out.sample("process_resident_memory_bytes", {}, float(412_991_488 if leader else 198_311_936))
    return out.text()
