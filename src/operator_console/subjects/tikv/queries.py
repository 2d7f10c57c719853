"""PromQL for a TiKV cluster, matching how its targets are labelled in real deployments.

Prometheus scrapes TiKV on its status port (20180, `status_address` in PD's store list),
not the 20160 store port, and PD on its client port (2379). tiup's generated
prometheus.yml (embed/templates/config/prometheus.yml.tpl) has jobs "tikv" and "pd" with
`instance` = the scraped address ("10.0.1.4:20180"); tidb-operator's TidbMonitor
(pkg/monitor/monitor) keeps jobs "tikv"/"pd" but relabels `instance` to the pod name
("basic-tikv-0") and adds `cluster` (the TidbCluster's name) and `component`.

Metric names and buckets, checked against the sources (tikv/tikv v7.5.7 and v8.5.7,
tikv/pd v7.5.7 and v8.5.7) and the shipped Grafana dashboards:
- tikv_grpc_msg_duration_seconds{type[,priority]}: tikv src/server/metrics.rs
  (GRPC_MSG_HISTOGRAM_VEC, exponential_buckets(5e-5, 2.0, 22); v8.5 added `priority`);
  QPS and p99 as metrics/grafana/tikv_details.json "QPS" and "99% gRPC message duration"
  write them, leaving out type="kv_gc" (background GC, seconds long).
- tikv_store_size_bytes{type="capacity"|"available"|"used"}: tikv
  components/pd_client/src/metrics.rs (STORE_SIZE_EVENT_INT_VEC); panels "Store size",
  "Available size", "Capacity size" of tikv_details.json.
- tikv_raftstore_apply_log_duration_seconds, tikv_raftstore_append_log_duration_seconds:
  tikv components/raftstore/src/store/metrics.rs (STORE_APPLY_LOG_HISTOGRAM,
  STORE_WRITE_TO_DB_DURATION_HISTOGRAM, exponential_buckets(0.00001, 2.0, 26)); panels
  "99% Apply log duration per server" / "99% Append log duration per server".
- pd_regions_status{type="miss-peer-region-count"|...}: pd pkg/statistics/metrics.go and
  region_collection.go. Every PD member exports it (the children are created at start)
  but only the leader sets it, so followers read 0: metrics/grafana/pd.json "Region
  health" takes `max by (type)`.
- pd_cluster_status{type="store_up_count"|...}: pd pkg/statistics/store_collection.go,
  a cluster total per type in v7.5 and one series per store (`store`, `engine`) since
  v8.5; pd.json "Abnormal stores" sums it, which reads the same in both.
- service_member_role{service="PD"}: pd pkg/member/metrics.go, 1 on the leader.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TargetLabels:
    """Label matchers that pick one cluster's TiKV and PD targets in Prometheus."""

    tikv: str = 'job="tikv"'
    pd: str = 'job="pd"'
    pod_instances: bool = False  # tidb-operator names instances after pods

    @classmethod
    def tiup(cls, extra: str = "") -> TargetLabels:
        """tiup's prometheus.yml: job="tikv"/"pd", instance = host:status_port."""
        tail = f",{extra}" if extra else ""
        return cls(tikv=f'job="tikv"{tail}', pd=f'job="pd"{tail}')

    @classmethod
    def tidb_operator(cls, cluster: str, namespace: str | None = None) -> TargetLabels:
        """TidbMonitor: job="tikv"/"pd", cluster=<TidbCluster name>, instance = pod name."""
        extra = f',cluster="{_escape(cluster)}"'
        if namespace:
            extra += f',kubernetes_namespace="{_escape(namespace)}"'
        return cls(tikv=f'job="tikv"{extra}', pd=f'job="pd"{extra}', pod_instances=True)

    def store_instance(self, status_address: str) -> str:
        """The `instance` label of the TiKV whose PD `status_address` this is."""
        if not self.pod_instances:
            return status_address
        host = status_address.rsplit(":", 1)[0]
        return host.split(".", 1)[0]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


@dataclass(frozen=True, slots=True)
class Query:
    """One PromQL expression and what its value means."""

    name: str
    promql: str
    unit: str
    by: str  # the label each result series is keyed by


def tikv_qps(t: TargetLabels, window: str = "1m") -> Query:
    """gRPC requests per second each TiKV serves (all types but GC)."""
    return Query(
        "tikv_qps",
        f"sum by (instance) (rate(tikv_grpc_msg_duration_seconds_count{{{t.tikv},"
        f'type!="kv_gc"}}[{window}]))',
        "requests/s",
        "instance",
    )


def tikv_grpc_p99(t: TargetLabels, window: str = "1m") -> Query:
    """99th percentile of gRPC message duration per TiKV, over all types but GC."""
    return Query(
        "tikv_grpc_p99",
        f"histogram_quantile(0.99, sum by (le, instance) (rate("
        f'tikv_grpc_msg_duration_seconds_bucket{{{t.tikv},type!="kv_gc"}}[{window}])))',
        "s",
        "instance",
    )


def tikv_store_size(t: TargetLabels, kind: str = "used") -> Query:
    """Bytes each TiKV reports for its disk: "capacity", "available" or "used"."""
    if kind not in ("capacity", "available", "used"):
        raise ValueError(f"tikv_store_size_bytes has no type {kind!r}")
    return Query(
        f"tikv_store_{kind}_bytes",
        f'sum by (instance) (tikv_store_size_bytes{{{t.tikv},type="{kind}"}})',
        "bytes",
        "instance",
    )


def tikv_available_ratio(t: TargetLabels) -> Query:
    """Available over capacity per TiKV: what PD's low-space-ratio is compared with."""
    return Query(
        "tikv_available_ratio",
        f'sum by (instance) (tikv_store_size_bytes{{{t.tikv},type="available"}})'
        f' / sum by (instance) (tikv_store_size_bytes{{{t.tikv},type="capacity"}})',
        "ratio",
        "instance",
    )


def tikv_apply_log_p99(t: TargetLabels, window: str = "1m") -> Query:
    """99th percentile of raftstore apply-log duration per TiKV."""
    return Query(
        "tikv_apply_log_p99",
        f"histogram_quantile(0.99, sum by (le, instance) (rate("
        f"tikv_raftstore_apply_log_duration_seconds_bucket{{{t.tikv}}}[{window}])))",
        "s",
        "instance",
    )


def tikv_append_log_p99(t: TargetLabels, window: str = "1m") -> Query:
    """99th percentile of raftstore append-log (write to raft engine) duration per TiKV."""
    return Query(
        "tikv_append_log_p99",
        f"histogram_quantile(0.99, sum by (le, instance) (rate("
        f"tikv_raftstore_append_log_duration_seconds_bucket{{{t.tikv}}}[{window}])))",
        "s",
        "instance",
    )


def pd_region_health(t: TargetLabels) -> Query:
    """Regions per health check as PD's leader counts them (miss-peer-region-count...)."""
    return Query(
        "pd_region_health", f"max by (type) (pd_regions_status{{{t.pd}}})", "regions", "type"
    )


def pd_store_states(t: TargetLabels) -> Query:
    """Stores per state as PD's leader counts them (store_up_count, store_down_count...)."""
    return Query(
        "pd_store_states",
        f'sum by (type) (pd_cluster_status{{{t.pd},type=~"store_.*_count"}})',
        "stores",
        "type",
    )


def pd_leader(t: TargetLabels) -> Query:
    """The PD member that says it leads (value 1)."""
    return Query("pd_leader", f'service_member_role{{{t.pd},service="PD"}} == 1', "", "instance")


def targets_up(t: TargetLabels) -> Query:
    """1 per TiKV and PD target Prometheus scraped last time, 0 per one it could not."""
    return Query("targets_up", f"up{{{t.tikv}}} or up{{{t.pd}}}", "", "instance")


def standard_queries(t: TargetLabels, window: str = "1m") -> tuple[Query, ...]:
    """Every query an operator's dashboard of a TiKV cluster needs."""
    return (
        tikv_qps(t, window),
        tikv_grpc_p99(t, window),
        tikv_store_size(t, "used"),
        tikv_store_size(t, "available"),
        tikv_store_size(t, "capacity"),
        tikv_available_ratio(t),
        tikv_apply_log_p99(t, window),
        tikv_append_log_p99(t, window),
        pd_region_health(t),
        pd_store_states(t),
        pd_leader(t),
        targets_up(t),
    )
