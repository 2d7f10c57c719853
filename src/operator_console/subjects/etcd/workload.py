"""The etcd subject's workload: the console's own clients with a ledger of every acknowledged
write (checked against a read-back while they run), or, for a cluster the console did not
start, only what the members' own /metrics count."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from operator_console.contract import SampleSink, SeriesSpec
from operator_console.domain import WorkloadSample, utcnow
from operator_console.lab.etcd.client import ClientTLS, EtcdError
from operator_console.lab.etcd.stats import WindowStats
from operator_console.lab.etcd.workload import EtcdWorkload, LostWrite
from operator_console.subjects.etcd.metrics import parse_metrics
from operator_console.subjects.etcd.spec import WorkloadChange, WorkloadSpec, parse

log = logging.getLogger(__name__)

SAMPLE_S = 1.0
# Fresh members answer their first requests slowly (connections, first fsyncs, lazy setup);
# those must not count against the latency SLO.
WARM_UP_S = 2.0
PREFIX = "console/workload/"


def traffic_series(p99_alarm_ms: float) -> tuple[SeriesSpec, ...]:
    """What the clients saw each second, with the latency SLO as the p99 alarm."""
    return (
        SeriesSpec("puts", "puts"),
        SeriesSpec("gets", "gets"),
        SeriesSpec("errors", "errors", alarm=0.0),
        SeriesSpec("leader_changes", "leader changes", alarm=0.0),
        SeriesSpec("p99_ms", "p99", unit="ms", alarm=p99_alarm_ms, digits=1),
    )


@dataclass(frozen=True, slots=True)
class LedgerCheck:
    """The last read-back of the acknowledged writes: how many were checked, which were lost."""

    at: float
    checked: int
    lost: tuple[LostWrite, ...] = ()
    error: str | None = None


class EtcdTraffic:
    """The console's own clients: puts, gets and deletes at a set rate over every member, and a
    check every few seconds that no acknowledged write has gone missing."""

    def __init__(
        self,
        endpoints: Callable[[], Mapping[str, str]],
        spec: WorkloadSpec,
        on_sample: SampleSink,
        *,
        p99_alarm_ms: float,
        tls: Callable[[], ClientTLS | None] = lambda: None,
    ) -> None:
        self._endpoints = endpoints
        self._spec = spec
        self._on_sample = on_sample
        self._tls = tls
        self.series: Sequence[SeriesSpec] = traffic_series(p99_alarm_ms)
        self.driver: EtcdWorkload | None = None
        self.check: LedgerCheck | None = None
        self.final: LedgerCheck | None = None
        self._checker: asyncio.Task[None] | None = None
        self._warm_until = 0.0

    async def start(self) -> None:
        spec = self._spec
        self.driver = EtcdWorkload(
            dict(self._endpoints()),
            rate=spec.rate if spec.rate is not None else 40.0,
            mix=spec.mix,
            keys=spec.keys,
            prefix=PREFIX,
            tls=self._tls(),
            timeout_s=spec.timeout_s,
            on_sample=self._sample,
        )
        await self.driver.start()
        self._warm_until = time.monotonic() + WARM_UP_S
        self._checker = asyncio.create_task(self._check_loop(), name="etcd-ledger-check")

    async def stop(self) -> None:
        if self._checker is not None:
            self._checker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checker
            self._checker = None
        driver = self.driver
        if driver is None:
            return
        await driver.pause()
        try:
            lost = await driver.lost_writes()
            self.final = LedgerCheck(time.monotonic(), len(driver.ledger.keys()), tuple(lost))
        except EtcdError as exc:
            self.final = LedgerCheck(time.monotonic(), 0, error=str(exc)[:300])
        log.info(
            "etcd workload: %d acknowledged writes, final read-back lost %s",
            driver.ledger.acknowledged,
            len(self.final.lost) if self.final.error is None else f"? ({self.final.error})",
        )
        await driver.stop()

    def adjust(self, changes: Mapping[str, Any]) -> None:
        change: WorkloadChange = parse(WorkloadChange, changes, "workload")
        if self.driver is not None:
            self.driver.adjust(rate=change.rate, mix=change.mix)

    def window(self, seconds: float) -> WindowStats | None:
        """The requests of the last `seconds`, none from the warm-up after the start."""
        span = min(seconds, time.monotonic() - self._warm_until)
        if self.driver is None or span <= 0:
            return None
        return self.driver.window(span)

    @property
    def acknowledged(self) -> int:
        return self.driver.ledger.acknowledged if self.driver is not None else 0

    async def _check_loop(self) -> None:
        assert self.driver is not None
        while True:
            await asyncio.sleep(self._spec.check_every_s)
            try:
                lost, checked = await self.driver.lost_writes_now()
                self.check = LedgerCheck(time.monotonic(), checked, tuple(lost))
            except EtcdError as exc:
                self.check = LedgerCheck(time.monotonic(), 0, error=str(exc)[:300])
            if self.check.lost:
                log.error("acknowledged writes missing: %s", [w.to_dict() for w in self.check.lost])

    def _sample(self, raw: dict[str, Any]) -> None:
        check = self.check
        values: dict[str, float | None] = {
            "puts": round(raw["puts_per_s"], 2),
            "gets": round(raw["gets_per_s"], 2),
            "deletes": round(raw["deletes_per_s"], 2),
            "errors": round(raw["errors_per_s"], 2),
            "p50_ms": raw["p50_ms"],
            "p99_ms": raw["p99_ms"],
            "leader_changes": float(raw["leader_changes"]),
            "raft_term": raw["raft_term"],
            "acknowledged_writes": float(raw["acknowledged_writes"]),
            "checked_writes": float(check.checked) if check else None,
            "lost_writes": float(len(check.lost)) if check and check.error is None else None,
        }
        self._on_sample(
            WorkloadSample(at=utcnow(), values=values, per_target=dict(raw["per_member"]))
        )


class MetricsSampler:
    """For a cluster the console did not start: each second, how much the members' own counters
    grew (writes applied, ranges served, gRPC errors, leader changes); no client latency."""

    def __init__(
        self,
        members: Sequence[str],
        metrics: Callable[[str], Any],
        on_sample: SampleSink,
        *,
        p99_alarm_ms: float,
    ) -> None:
        self._members = list(members)
        self._metrics = metrics  # name -> awaitable of the member's /metrics text
        self._on_sample = on_sample
        self.series: Sequence[SeriesSpec] = (
            SeriesSpec("puts", "puts"),
            SeriesSpec("gets", "ranges"),
            SeriesSpec("errors", "gRPC errors", alarm=0.0),
            SeriesSpec("leader_changes", "leader changes", alarm=0.0),
            SeriesSpec("p99_ms", "p99 (not measured)", unit="ms", alarm=p99_alarm_ms),
        )
        self._last: dict[str, dict[str, float]] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="etcd-metrics-sampler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def adjust(self, changes: Mapping[str, Any]) -> None:
        raise ValueError("the console does not drive this cluster's traffic (attached)")

    async def _loop(self) -> None:
        next_at = time.monotonic()
        while True:
            next_at += SAMPLE_S
            try:
                self._on_sample(await self.sample())
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sampling the members' counters failed")
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def _read(self, name: str) -> dict[str, float]:
        metrics = parse_metrics(await self._metrics(name))
        return {
            "puts": metrics.get("puts") or 0.0,
            "deletes": metrics.get("deletes") or 0.0,
            "gets": metrics.get("ranges") or 0.0,
            "errors": metrics.grpc_errors,
            "leader_changes": metrics.get("leader_changes") or 0.0,
        }

    async def sample(self) -> WorkloadSample:
        """The counters' growth since the last sample: writes as applied (the most any member
        applied), ranges and errors summed over the members that served them."""
        reads = await asyncio.gather(
            *(self._read(name) for name in self._members), return_exceptions=True
        )
        values: dict[str, float | None] = {"puts": 0.0, "deletes": 0.0, "gets": 0.0}
        values.update({"errors": 0.0, "leader_changes": 0.0, "p99_ms": None})
        per_target: dict[str, dict[str, Any]] = {}
        for name, read in zip(self._members, reads, strict=True):
            if isinstance(read, BaseException):
                per_target[name] = {"reachable": False}
                continue
            before = self._last.get(name, read)
            if any(read[k] < v for k, v in before.items()):
                before = dict.fromkeys(read, 0.0)  # restarted: its counters began again
            self._last[name] = read
            grew = {k: read[k] - before.get(k, 0.0) for k in read}
            per_target[name] = grew
            for key in ("puts", "deletes", "leader_changes"):
                values[key] = max(values[key] or 0.0, grew[key])
            for key in ("gets", "errors"):
                values[key] = (values[key] or 0.0) + grew[key]
        return WorkloadSample(at=utcnow(), values=values, per_target=per_target)
