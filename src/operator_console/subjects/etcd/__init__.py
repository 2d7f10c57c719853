"""The etcd subject: a real 3- or 5-member raft cluster, run locally with its peer links through
fault proxies, or attached to by its client URLs (with TLS and credentials)."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from operator_console.contract import Deployment, ProcessBackend, RuntimeDescription, SampleSink
from operator_console.domain import Observation
from operator_console.lab.etcd.clients_host import ClientsHost
from operator_console.lab.etcd.faults import CLUSTER_TARGET, FAULT_KINDS, LEADER_TARGET
from operator_console.lab.supervisor import Supervisor
from operator_console.subjects.etcd.actions import ACTION_NAMES, build_catalog
from operator_console.subjects.etcd.backend import EtcdBackend
from operator_console.subjects.etcd.invariants import default_invariants
from operator_console.subjects.etcd.kit import EtcdAgentKit
from operator_console.subjects.etcd.lab import AttachedEtcdLab, EtcdLab
from operator_console.subjects.etcd.observer import EtcdObserver
from operator_console.subjects.etcd.spec import (
    TopologySpec,
    WorkloadChange,
    WorkloadSpec,
    parse,
    parse_endpoints,
)
from operator_console.subjects.etcd.workload import EtcdTraffic, MetricsSampler

NAME = "etcd"

LOCAL_ABOUT = (
    "The console started these members itself, each its own etcd process with its own data "
    "dir and log. Every member's peer traffic runs through a fault proxy, so a partition or a "
    "slow link is real. The console's own clients (a process of their own, so the console's "
    "work never shows as cluster latency) put, get and delete round robin over the members "
    "(failing over on errors) and keep a ledger of every write etcd acknowledged, checked "
    "against a linearizable read-back every few seconds."
)


# An investigation waits longer for each read than a monitor tick does: on a busy machine a
# read that times out would read as evidence of a fault.
INVESTIGATION_READ_TIMEOUT_S = 2.5


def _patient(observer: EtcdObserver) -> Callable[[], Awaitable[Observation]]:
    return functools.partial(observer.observe, read_timeout_s=INVESTIGATION_READ_TIMEOUT_S)


class EtcdKind:
    """Entry point of the etcd subject."""

    name = NAME
    description = "etcd: a 3- or 5-member raft cluster with peer links through fault proxies"

    def validate(self, topology: Mapping[str, Any], workload: Mapping[str, Any]) -> None:
        parse(TopologySpec, topology, "topology")
        parse(WorkloadSpec, workload, "workload")

    def validate_workload_change(self, changes: Mapping[str, Any]) -> None:
        parse(WorkloadChange, changes, "workload")

    def fault_kinds(self) -> Sequence[str]:
        return FAULT_KINDS

    def invariant_names(self) -> Sequence[str]:
        return [invariant.name for invariant in default_invariants()]

    def action_names(self) -> Sequence[str]:
        return ACTION_NAMES

    def targets(self, topology: Mapping[str, Any]) -> Sequence[str]:
        spec = parse(TopologySpec, topology, "topology")
        members = [f"member-{i}" for i in range(1, spec.members + 1)]
        return [*members, LEADER_TARGET, CLUSTER_TARGET]

    def sized(self, size: int) -> dict[str, Any]:
        parse(TopologySpec, {"members": size}, "topology")
        return {"members": size}

    def deploy(
        self,
        topology: Mapping[str, Any],
        workload: Mapping[str, Any] | None,
        run_dir: Path,
        on_sample: SampleSink,
    ) -> Deployment:
        from operator_console.lab.etcd.cluster import EtcdCluster

        topo = parse(TopologySpec, topology, "topology")
        cluster = EtcdCluster(
            run_dir, members=topo.members, quota_backend_bytes=topo.quota_backend_bytes
        )
        traffic = None
        if workload is not None:
            traffic = EtcdTraffic(
                cluster.clients_host,
                parse(WorkloadSpec, workload, "workload"),
                on_sample,
                p99_alarm_ms=topo.thresholds.latency_p99_ms,
            )
        from operator_console.lab.processes import SupervisedProcesses

        backend = EtcdBackend(
            cluster.member_names,
            cluster.client_urls,
            tls=cluster.client_tls(),
            cluster=cluster,
            traffic=traffic,
            processes=SupervisedProcesses(
                cluster.supervisor, cluster.member_names, cluster.restart_member
            ),
        )
        thresholds = topo.thresholds
        observer = EtcdObserver(
            backend,
            invariants=default_invariants(thresholds),
            history_s=thresholds.flapping_window_s,
        )
        kit = EtcdAgentKit(backend, build_catalog(backend), _patient(observer), about=LOCAL_ABOUT)
        return Deployment(
            lab=EtcdLab(cluster, backend), subject=observer, workload=traffic, agent=kit
        )

    def describe_runtime(self) -> RuntimeDescription:
        """The etcd binary the lab would run: release, path, where it was found, any caveat."""
        from operator_console.lab.etcd.binary import EtcdBinaryError, find_etcd

        try:
            binary = find_etcd()
        except EtcdBinaryError as exc:
            return RuntimeDescription(str(exc), ready=False)
        text = f"etcd {binary.version} ({binary.path}, from {binary.source})"
        if binary.note:
            text += f"; note: {binary.note}"
        return RuntimeDescription(text)

    def validate_endpoints(self, endpoints: Mapping[str, Any]) -> None:
        parse_endpoints(endpoints)

    def attach(
        self,
        endpoints: Mapping[str, Any],
        run_dir: Path,
        on_sample: SampleSink,
        *,
        processes: ProcessBackend | None = None,
        workload: Mapping[str, Any] | None = None,
    ) -> Deployment:
        parsed = parse_endpoints(endpoints)
        username, password = parsed.credentials()
        members = dict(parsed.members)
        backend = EtcdBackend(
            list(members),
            lambda: members,
            tls=parsed.tls,
            username=username,
            password=password,
            processes=processes,
        )
        thresholds = parsed.spec.thresholds
        observer = EtcdObserver(
            backend,
            invariants=default_invariants(thresholds),
            history_s=thresholds.flapping_window_s,
        )
        traffic: EtcdTraffic | MetricsSampler
        if workload is not None:
            # The console's own clients, a process of their own as in the local lab.
            host = ClientsHost(
                Supervisor(run_dir), run_dir, lambda: members, lambda: parsed.tls, 20.0
            )
            credentials = (username, password) if username and password else None
            backend.traffic = traffic = EtcdTraffic(
                host,
                parse(WorkloadSpec, workload, "workload"),
                on_sample,
                p99_alarm_ms=thresholds.latency_p99_ms,
                credentials=credentials,
            )
        else:
            traffic = MetricsSampler(
                list(members),
                lambda name: backend.client(name).metrics(timeout=1.0),
                on_sample,
                p99_alarm_ms=thresholds.latency_p99_ms,
            )
        secure = "TLS" if parsed.tls is not None else "plain http"
        auth = f", as etcd user {username}" if username else ""
        if processes is not None:
            short = f"{len(members)} etcd members in {processes.about()} ({secure}{auth})"
            about = (
                f"{short}: the "
                "console reads them through etcd's client API and restarts, resumes and reads "
                f"the logs of their {processes.kind}s through the backend (no peer proxies: "
                "no partition or latency faults)"
            )
            if workload is not None:
                about += "; the console's own clients drive the traffic and keep a ledger"
        else:
            short = f"attached to {len(members)} etcd members ({secure}{auth})"
            about = (
                f"{short}: the console did "
                "not start this cluster, so it reads and acts only through etcd's own client "
                "API (no process control, no logs, no traffic of its own: the workload panel "
                "shows the members' own counters)"
            )
        kit = EtcdAgentKit(backend, build_catalog(backend), _patient(observer), about=about)
        lab = AttachedEtcdLab(parsed.shown(), short, backend)
        return Deployment(
            lab=lab, subject=observer, workload=traffic, agent=kit, placement="attach"
        )
