"""The tikv subject: a TiKV cluster watched through PD's HTTP API and Prometheus.

The console cannot start TiKV as local processes: `watch tikv --endpoints FILE` attaches
to a running cluster, and `compose/tikv` is a stack of containers that `run SCENARIO
--placement compose` brings up (faults and process actions through its containers).
Built and tested against PD's wire format as PD v7.5.0, v7.5.7, v8.5.7 and v26.3.4 write
it and TiKV's and PD's /metrics scraped by a real Prometheus, from recorded payloads; never
yet against a live TiKV cluster.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from operator_console.contract import (
    Deployment,
    ProcessBackend,
    RuntimeDescription,
    SampleSink,
    SpecError,
)

NAME = "tikv"
NO_LAB = (
    "TiKV cannot be started by the console as local processes: run a TiKV scenario on the "
    "compose stack (`--placement compose --compose compose/tikv`), or attach to a running "
    "cluster with `operator-console watch tikv --endpoints FILE`"
)
TESTED = (
    "Tested against PD's HTTP wire format as PD v7.5.0, v7.5.7, v8.5.7 and v26.3.4 write "
    "it and TiKV/PD /metrics scraped by a real Prometheus, all from recorded payloads; not "
    "yet against a live TiKV cluster."
)
PD_TIMEOUT_S = 2.0  # per request, well inside the monitor's observation timeout
PROMETHEUS_TIMEOUT_S = 2.0


class StackTopology(BaseModel):
    """A scenario's `[topology]`: the compose stack's shape (compose/tikv runs 3 and 3)."""

    model_config = ConfigDict(extra="forbid")
    pd: int = Field(default=3, ge=1, le=5)
    stores: int = Field(default=3, ge=1, le=9)


def _topology(topology: Mapping[str, Any]) -> StackTopology:
    try:
        return StackTopology.model_validate(dict(topology))
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"]) or "topology"
        raise SpecError(f"topology.{where}", str(error["msg"])) from None


class TikvKind:
    """Entry point of the tikv subject (attach, or a compose stack)."""

    name = NAME
    description = f"a TiKV cluster watched through PD's HTTP API and Prometheus. {TESTED}"

    def validate(self, topology: Mapping[str, Any], workload: Mapping[str, Any]) -> None:
        _topology(topology)
        if workload:
            raise SpecError(
                "workload", "the stack's go-ycsb service drives the traffic; leave it out"
            )

    def validate_workload_change(self, changes: Mapping[str, Any]) -> None:
        raise SpecError("workload", "the console does not drive a TiKV cluster's traffic")

    def fault_kinds(self) -> Sequence[str]:
        from operator_console.subjects.tikv.stack import FAULT_KINDS

        return FAULT_KINDS

    def invariant_names(self) -> Sequence[str]:
        from operator_console.subjects.tikv.invariants import invariant_names

        return invariant_names()

    def action_names(self) -> Sequence[str]:
        from operator_console.subjects.tikv.actions import ACTION_NAMES

        return ACTION_NAMES

    def targets(self, topology: Mapping[str, Any]) -> Sequence[str]:
        from operator_console.subjects.tikv.stack import stack_targets

        spec = _topology(topology)
        return stack_targets(spec.pd, spec.stores)

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
        self,
        endpoints: Mapping[str, Any],
        run_dir: Path,
        on_sample: SampleSink,
        *,
        processes: ProcessBackend | None = None,
        workload: Mapping[str, Any] | None = None,
    ) -> Deployment:
        from operator_console.subjects.tikv.attach import attach

        return attach(endpoints, on_sample, processes)


__all__ = ["NAME", "NO_LAB", "TESTED", "TikvKind"]
