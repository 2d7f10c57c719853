"""The tikv subject: a TiKV cluster watched through PD's HTTP API and Prometheus.

The console cannot start TiKV (there is no local lab): `watch tikv --endpoints FILE`
attaches to a running cluster. Built and tested against PD's wire format as PD v7.5.0,
v7.5.7, v8.5.7 and v26.3.4 write it and TiKV's and PD's /metrics scraped by a real
Prometheus, from recorded payloads; never yet against a live TiKV cluster.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from operator_console.contract import Deployment, RuntimeDescription, SampleSink, SpecError

NAME = "tikv"
NO_LAB = (
    "TiKV cannot be started by the console (there is no local TiKV lab); attach to a "
    "running cluster with `operator-console watch tikv --endpoints FILE`"
)
TESTED = (
    "Tested against PD's HTTP wire format as PD v7.5.0, v7.5.7, v8.5.7 and v26.3.4 write "
    "it and TiKV/PD /metrics scraped by a real Prometheus, all from recorded payloads; not "
    "yet against a live TiKV cluster."
)
PD_TIMEOUT_S = 2.0  # per request, well inside the monitor's observation timeout
PROMETHEUS_TIMEOUT_S = 2.0


class TikvKind:
    """Entry point of the tikv subject (attach only)."""

    name = NAME
    description = f"a TiKV cluster watched through PD's HTTP API and Prometheus. {TESTED}"

    def validate(self, topology: Mapping[str, Any], workload: Mapping[str, Any]) -> None:
        raise SpecError("subject", NO_LAB)

    def validate_workload_change(self, changes: Mapping[str, Any]) -> None:
        raise SpecError("workload", "the console does not drive a TiKV cluster's traffic")

    def fault_kinds(self) -> Sequence[str]:
        return ()

    def invariant_names(self) -> Sequence[str]:
        from operator_console.subjects.tikv.invariants import invariant_names

        return invariant_names()

    def action_names(self) -> Sequence[str]:
        from operator_console.subjects.tikv.actions import ACTION_NAMES

        return ACTION_NAMES

    def targets(self, topology: Mapping[str, Any]) -> Sequence[str]:
        return ()

    def sized(self, size: int) -> dict[str, Any]:
        raise SpecError("size", NO_LAB)

    def deploy(
        self,
        topology: Mapping[str, Any],
        workload: Mapping[str, Any] | None,
        run_dir: Path,
        on_sample: SampleSink,
    ) -> Deployment:
        raise SpecError("subject", NO_LAB)

    def describe_runtime(self) -> RuntimeDescription:
        return RuntimeDescription(NO_LAB, deploys=False)

    def validate_endpoints(self, endpoints: Mapping[str, Any]) -> None:
        from operator_console.subjects.tikv.spec import parse_endpoints

        spec = parse_endpoints(endpoints)
        spec.pd.credentials("pd")  # a password_file that cannot be read is named now
        if spec.prometheus is not None:
            spec.prometheus.credentials("prometheus")

    def attach(
        self, endpoints: Mapping[str, Any], run_dir: Path, on_sample: SampleSink
    ) -> Deployment:
        from operator_console.subjects.tikv.attach import attach

        return attach(endpoints, on_sample)


__all__ = ["NAME", "NO_LAB", "TESTED", "TikvKind"]
