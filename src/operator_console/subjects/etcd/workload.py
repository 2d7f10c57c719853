"""The etcd subject's workload: the console's own clients (a process of their own, with a ledger
of every acknowledged write checked against a read-back while they run), or, for a cluster the
console did not start, only what the members' own /metrics count."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import httpx

from operator_console.contract import SampleSink, SeriesSpec
from operator_console.domain import WorkloadSample, utcnow
from operator_console.lab.etcd.ledger import Ack, LostWrite
from operator_console.lab.etcd.stats import WindowSummary
from operator_console.subjects.etcd.metrics import parse_metrics
from operator_console.subjects.etcd.spec import WorkloadChange, WorkloadSpec, parse

if TYPE_CHECKING:
    from operator_console.lab.etcd.clients_host import ClientsHost

log = logging.getLogger(__name__)

SAMPLE_S = 1.0
# Fresh members answer their first requests slowly (connections, first fsyncs, lazy setup);
# those must not count against the latency SLO.
WARM_UP_S = 2.0
PREFIX = "console/workload/"
API_TIMEOUT_S = 2.0
# Stopping waits for requests in flight, then reads every key back from one member after another.
FINAL_TIMEOUT_S = 30.0


def traffic_series(p99_alarm_ms: float) -> tuple[SeriesSpec, ...]:
    """What the clients saw each second, with the latency SLO as the p99 alarm."""
    return (
        SeriesSpec("puts", "puts"),
        SeriesSpec("gets", "gets"),
        SeriesSpec("errors", "errors", alarm=0.0),
        SeriesSpec("leader_changes", "leader changes", alarm=0.0),
        SeriesSpec("p50_ms", "p50", unit="ms", digits=1),
        SeriesSpec("p99_ms", "p99", unit="ms", alarm=p99_alarm_ms, digits=1),
    )


class WorkloadError(RuntimeError):
    """The clients process could not be reached or refused a request."""


@dataclass(frozen=True, slots=True)
class LedgerCheck:
    """A read-back of the acknowledged writes: how many were checked, which were lost."""

    at: float  # time.monotonic() of this process when the check was made
    checked: int
    lost: tuple[LostWrite, ...] = ()
    error: str | None = None
    acknowledged: int | None = None

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> LedgerCheck:
        return cls(
            at=time.monotonic() - float(data.get("age_s") or 0.0),
            checked=int(data.get("checked") or 0),
            lost=tuple(LostWrite(**w) for w in data.get("lost") or ()),
            error=data.get("error"),
            acknowledged=data.get("acknowledged"),
        )


class EtcdTraffic:
    """The console's side of the clients process: it starts it (a lab process like the
    members), relays its samples every second, and asks it for windows, ledger checks and the
    final read-back; the clients' own ledger check runs every few seconds in that process."""

    def __init__(
        self,
        host: ClientsHost,
        spec: WorkloadSpec,
        on_sample: SampleSink,
        *,
        p99_alarm_ms: float,
        warm_up_s: float = WARM_UP_S,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        self._host = host
        self._credentials = credentials
        self._spec = spec
        self._on_sample = on_sample
        self._warm_up_s = warm_up_s
        self.series: Sequence[SeriesSpec] = traffic_series(p99_alarm_ms)
        self.url: str | None = None
        self.check: LedgerCheck | None = None
        self.final: LedgerCheck | None = None
        self._acknowledged = 0
        self._seq = 0
        self._http: httpx.AsyncClient | None = None
        self._relay_task: asyncio.Task[None] | None = None
        self._adjusting: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        """The clients process, while it runs."""
        return self._host.pid

    async def start(self) -> None:
        spec = self._spec
        self.url = await self._host.start_clients(
            rate=spec.rate if spec.rate is not None else 40.0,
            mix=spec.mix,
            keys=spec.keys,
            prefix=PREFIX,
            timeout_s=spec.timeout_s,
            check_every_s=spec.check_every_s,
            warm_up_s=self._warm_up_s,
            credentials=self._credentials,
        )
        self._http = httpx.AsyncClient(timeout=API_TIMEOUT_S, trust_env=False)
        self._relay_task = asyncio.create_task(self._relay(), name="etcd-workload-relay")

    async def stop(self) -> None:
        """Stop relaying, take the final read-back (once), and stop the clients process."""
        if self._relay_task is not None:
            self._relay_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._relay_task
            self._relay_task = None
        if self.url is not None:
            with contextlib.suppress(WorkloadError):
                await self.finish()
        self.url = None
        await self._host.stop_clients()
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def finish(self) -> LedgerCheck:
        """Traffic stops, requests in flight end, and every key is read back: the final word."""
        if self.final is None:
            data = await self._request("POST", "/api/stop", timeout=FINAL_TIMEOUT_S)
            self.final = LedgerCheck.from_api(data)
            lost = self.final
            log.info(
                "etcd workload: %s acknowledged writes, final read-back lost %s",
                lost.acknowledged,
                len(lost.lost) if lost.error is None else f"? ({lost.error})",
            )
        return self.final

    async def ground_truth(self) -> dict[str, Any] | None:
        """What the ledger says once traffic has stopped: acknowledged writes a final
        linearizable read-back no longer shows (0 unless etcd lost a write)."""
        if self.url is None and self.final is None:
            return None
        try:
            final = await self.finish()
        except WorkloadError as exc:
            return {"lost_writes": None, "error": str(exc)[:300]}
        truth: dict[str, Any] = {
            "lost_writes": len(final.lost) if final.error is None else None,
            "checked_writes": final.checked,
            "acknowledged_writes": final.acknowledged,
        }
        if final.error is not None:
            truth["error"] = final.error
        return truth

    # ---------------------------------------------------------------------- the API

    async def _request(
        self, method: str, path: str, *, timeout: float = API_TIMEOUT_S, **kwargs: Any
    ) -> dict[str, Any]:
        if self.url is None or self._http is None:
            raise WorkloadError("the clients process is not running")
        try:
            response = await self._http.request(
                method, f"{self.url}{path}", timeout=timeout, **kwargs
            )
        except httpx.HTTPError as exc:
            raise WorkloadError(f"the clients process at {self.url}: {exc!r}") from exc
        if response.status_code >= 400:
            raise WorkloadError(f"{method} {path}: HTTP {response.status_code} {response.text}")
        data: dict[str, Any] = response.json()
        return data

    async def health(self) -> dict[str, Any]:
        """The clients' own view: rate, mix, requests in flight, writes acknowledged."""
        return await self._request("GET", "/api/health")

    async def window(self, seconds: float) -> WindowSummary | None:
        """The requests of the last `seconds`, none from the warm-up after the start; the
        ledger's last check and the acknowledged count come with it. None while no clients run
        (before the start, after the stop); a clients process that stopped answering raises."""
        if self.url is None:
            return None
        data = await self._request("GET", "/api/window", params={"seconds": seconds})
        self._acknowledged = int(data.get("acknowledged") or 0)
        if data.get("check") is not None:
            self.check = LedgerCheck.from_api(data["check"])
        stats = data.get("window")
        return WindowSummary.from_dict(stats) if stats is not None else None

    async def check_now(self) -> LedgerCheck:
        """A ledger check now, while traffic runs (settled keys only)."""
        self.check = LedgerCheck.from_api(await self._request("POST", "/api/check"))
        return self.check

    async def ledger(self) -> dict[str, Ack]:
        """Per key the latest write etcd acknowledged to the clients."""
        data = await self._request("GET", "/api/ledger")
        self._acknowledged = int(data.get("acknowledged") or 0)
        return {key: Ack(key, **ack) for key, ack in data.get("acks", {}).items()}

    @property
    def acknowledged(self) -> int:
        return self._acknowledged

    def adjust(self, changes: Mapping[str, Any]) -> None:
        """Validated here (SpecError on bad input), sent in order to the clients process."""
        change: WorkloadChange = parse(WorkloadChange, changes, "workload")
        body = {k: v for k, v in (("rate", change.rate), ("mix", change.mix)) if v is not None}
        if body and self.url is not None:
            previous = self._adjusting
            self._adjusting = asyncio.get_running_loop().create_task(self._send(previous, body))

    async def _send(self, previous: asyncio.Task[None] | None, body: dict[str, Any]) -> None:
        if previous is not None:
            with contextlib.suppress(Exception):
                await previous
        try:
            await self._request("PUT", "/api/traffic", json=body)
        except WorkloadError as exc:
            log.warning("changing the clients' traffic failed: %s", exc)

    async def adjusted(self) -> None:
        """Wait until every change asked for so far reached the clients."""
        if self._adjusting is not None:
            await self._adjusting

    # ------------------------------------------------------------------- relaying

    async def _relay(self) -> None:
        next_at = time.monotonic()
        while True:
            next_at += SAMPLE_S
            try:
                data = await self._request("GET", "/api/samples", params={"after": self._seq})
                for raw in data.get("samples", []):
                    self._seq = max(self._seq, int(raw["seq"]))
                    self._sample(raw)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("relaying the clients' samples failed", exc_info=True)
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    def _sample(self, raw: dict[str, Any]) -> None:
        check = LedgerCheck.from_api(raw["check"]) if raw.get("check") else None
        if check is not None and (self.check is None or check.at > self.check.at):
            self.check = check
        self._acknowledged = max(self._acknowledged, int(raw["acknowledged_writes"]))
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
            WorkloadSample(
                at=datetime.fromisoformat(raw["at"]),
                values=values,
                per_target=dict(raw["per_member"]),
            )
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

    async def ground_truth(self) -> dict[str, Any] | None:
        return None  # it only counts what the cluster reports: no record of its own

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
