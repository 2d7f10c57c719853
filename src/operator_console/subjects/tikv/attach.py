"""Building one watch of a TiKV cluster from its endpoints file: the PD and Prometheus
clients, the observer, the sampler, the action catalog and the agent kit."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from operator_console.contract import AttachedLab, Deployment, Fault, ProcessBackend, SampleSink
from operator_console.subjects.tikv import PD_TIMEOUT_S, PROMETHEUS_TIMEOUT_S, TESTED
from operator_console.subjects.tikv.actions import build_catalog
from operator_console.subjects.tikv.invariants import default_invariants
from operator_console.subjects.tikv.kit import TikvAgentKit
from operator_console.subjects.tikv.metrics import MetricsReader
from operator_console.subjects.tikv.observer import TikvObserver
from operator_console.subjects.tikv.pd import PDClient
from operator_console.subjects.tikv.prometheus import PrometheusClient
from operator_console.subjects.tikv.spec import EndpointsSpec, parse_endpoints
from operator_console.subjects.tikv.state import TikvState
from operator_console.subjects.tikv.workload import TikvSampler


def about(spec: EndpointsSpec) -> str:
    """One paragraph for the picker and the timeline: what is watched, how, what was tested."""
    pd = ", ".join(spec.pd_endpoints())
    prom = spec.prometheus_url()
    metrics = f" and Prometheus at {prom}" if prom else " (no Prometheus: PD's counts only)"
    return (
        f"attached to TiKV through PD at {pd}{metrics}: the console did not start this "
        "cluster; it reads PD's HTTP API each tick (members, health, stores, region "
        "statistics and checks, never the whole region list) and acts only through PD's "
        f"operator and scheduler APIs (no process control). {TESTED}"
    )


class TikvLab(AttachedLab):
    """The `Lab` of a watched cluster: nothing to start; with the stack's containers, the
    faults they allow (stack.py); stopping closes the PD client."""

    def __init__(
        self, spec: EndpointsSpec, about: str, pd: PDClient, processes: ProcessBackend | None
    ) -> None:
        super().__init__(spec.redacted(), about)
        self._pd = pd
        self._processes = processes

    def fault_kinds(self) -> Sequence[str]:
        from operator_console.subjects.tikv.stack import FAULT_KINDS

        return FAULT_KINDS if self._processes is not None else ()

    def make_fault(self, kind: str, target: str | None, params: Mapping[str, Any]) -> Fault:
        if self._processes is None:
            return super().make_fault(kind, target, params)
        from operator_console.subjects.tikv.stack import make_stack_fault

        return make_stack_fault(self._pd, self._processes, kind, target, params)


def attach(
    endpoints: Mapping[str, Any],
    on_sample: SampleSink,
    processes: ProcessBackend | None = None,
) -> Deployment:
    spec = parse_endpoints(endpoints)
    pd = PDClient(
        spec.pd.endpoints,
        tls=spec.pd.tls.files() if spec.pd.tls else None,
        credentials=spec.pd.credentials("pd"),
        timeout=PD_TIMEOUT_S,
    )
    metrics: MetricsReader | None = None
    if spec.prometheus is not None:
        prom = spec.prometheus
        client = PrometheusClient(
            prom.url,
            tls=prom.tls.files() if prom.tls else None,
            credentials=prom.credentials("prometheus"),
            timeout=PROMETHEUS_TIMEOUT_S,
        )
        metrics = MetricsReader(client, prom.targets(), prom.window)
    invariants = default_invariants(spec.thresholds)
    observer = TikvObserver(
        pd, invariants=invariants, thresholds=spec.thresholds, prometheus=metrics
    )

    def instances() -> dict[str, str]:
        last = observer.last
        state = last.state if last is not None else None
        if not isinstance(state, TikvState):
            return {}
        return {
            observer.labels.store_instance(v.status_address): v.target
            for v in state.stores.values()
        }

    sampler = TikvSampler(
        on_sample,
        pd=pd,
        metrics=metrics,
        targets=instances,
        p99_alarm_ms=spec.thresholds.grpc_p99_ms,
    )
    text = about(spec)
    if processes is not None:
        text = text.replace(
            "(no process control)", f"and restarts or resumes its {processes.kind}s"
        )
        text += f" Its processes: {processes.about()}."
    kit = TikvAgentKit(
        pd, observer, build_catalog(pd, processes), metrics, about=text, processes=processes
    )
    return Deployment(
        lab=TikvLab(spec, text, pd, processes),
        subject=observer,
        workload=sampler,
        agent=kit,
        placement="attach",
    )
