"""Clients that put, get and delete against etcd at a set rate, keeping ground truth of every ack.

The workload spreads its requests round robin over the members' client URLs and fails over on
errors, as real clients do. Every acknowledged write goes into a `WriteLedger` with the revision
etcd gave it; `lost_writes()` reads the keys back with a linearizable read and reports each
acknowledged write the cluster no longer has. Only one request per key is in flight at a time,
so each key's acknowledgements are ordered.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from operator_console.lab.etcd.client import (
    ClientTLS,
    EtcdClient,
    EtcdError,
    EtcdRequestError,
    EtcdUnavailableError,
    Status,
)
from operator_console.lab.etcd.ledger import Ack, LostWrite, WriteLedger
from operator_console.lab.etcd.stats import WindowStats, percentile, window_stats

__all__ = ["Ack", "EtcdWorkload", "LostWrite", "WindowStats", "WriteLedger", "percentile"]

log = logging.getLogger(__name__)

DEFAULT_MIX: dict[str, float] = {"put": 0.5, "get": 0.4, "delete": 0.1}
OPS = ("put", "get", "delete")
SAMPLE_INTERVAL_S = 1.0
MAX_DRIVER_SLEEP_S = 0.1
MAX_BACKLOG_S = 1.0
# After a failure an endpoint goes to the back of the rotation for this long.
BENCH_S = 1.0
READ_BACK_TIMEOUT_S = 3.0

Sink = Callable[[dict[str, Any]], None]


@dataclass(frozen=True, slots=True)
class _Op:
    at: float
    kind: str
    member: str | None
    ok: bool
    latency_ms: float | None = None
    error: str = ""


@dataclass(slots=True)
class _Tally:
    counts: Counter[str] = field(default_factory=Counter)
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    error_kinds: Counter[str] = field(default_factory=Counter)
    per_member: dict[str, Counter[str]] = field(default_factory=dict)


def _error_kind(exc: EtcdError) -> str:
    if isinstance(exc, EtcdUnavailableError):
        return "unavailable"
    if isinstance(exc, EtcdRequestError):
        if exc.no_space:
            return "nospace"
        return exc.server_message.removeprefix("etcdserver: ").replace(" ", "_")[:40]
    return type(exc).__name__


class EtcdWorkload:
    """Open-loop put/get/delete traffic over the members, sampled every second."""

    def __init__(
        self,
        endpoints: Mapping[str, str],
        *,
        rate: float = 50.0,
        mix: Mapping[str, float] | None = None,
        keys: int = 1000,
        prefix: str = "workload/",
        serializable_reads: float = 0.0,
        tls: ClientTLS | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = 1.0,
        on_sample: Sink | None = None,
        max_in_flight: int = 200,
        seed: int | None = None,
        history: int = 300,
    ) -> None:
        if not endpoints:
            raise ValueError("the workload needs at least one endpoint")
        if keys < 1:
            raise ValueError(f"keys must be at least 1, got {keys}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self._endpoints = dict(endpoints)
        self._names = list(self._endpoints)
        self._keys = [f"{prefix}{i:04d}" for i in range(keys)]
        self.prefix = prefix
        self.timeout_s = timeout_s
        self.max_in_flight = max_in_flight
        self._on_sample = on_sample
        self._rng = random.Random(seed)
        self._rate = 0.0
        self._mix: dict[str, float] = {}
        self._serializable = 0.0
        self.adjust(rate=rate, mix=mix or DEFAULT_MIX, serializable_reads=serializable_reads)
        self._tls = tls
        self._credentials = (username, password)
        self._clients: dict[str, EtcdClient] = {}
        self.ledger = WriteLedger()
        self.history: deque[dict[str, Any]] = deque(maxlen=history)
        self.latest: dict[str, Any] | None = None
        self._ops: deque[_Op] = deque()
        self._busy: set[str] = set()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._rr = 0
        self._benched: dict[str, float] = {}
        self._seq = 0
        self._leader: tuple[str, int] | None = None
        self._member_ids: dict[int, str] = {}
        self._driver: asyncio.Task[None] | None = None
        self._sampler: asyncio.Task[None] | None = None

    # ----------------------------------------------------------------- control

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def mix(self) -> dict[str, float]:
        return dict(self._mix)

    @property
    def endpoints(self) -> dict[str, str]:
        return dict(self._endpoints)

    @property
    def running(self) -> bool:
        return self._driver is not None and not self._driver.done()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def adjust(
        self,
        changes: Mapping[str, Any] | None = None,
        *,
        rate: float | None = None,
        mix: Mapping[str, float] | None = None,
        serializable_reads: float | None = None,
    ) -> None:
        """Change the rate (ops/s, 0 pauses), the put/get/delete mix or the serializable share."""
        given = dict(changes or {})
        unknown = set(given) - {"rate", "mix", "serializable_reads"}
        if unknown:
            raise ValueError(f"unknown workload settings: {', '.join(sorted(unknown))}")
        rate = given.get("rate", rate)
        mix = given.get("mix", mix)
        serializable_reads = given.get("serializable_reads", serializable_reads)
        if rate is not None:
            if isinstance(rate, bool) or not isinstance(rate, int | float):
                raise ValueError(f"rate must be a number, got {rate!r}")
            if rate < 0 or math.isnan(rate) or math.isinf(rate):
                raise ValueError(f"rate must be a finite number >= 0, got {rate}")
        if mix is not None:
            bad = set(mix) - set(OPS)
            if bad:
                raise ValueError(f"mix has unknown operations {sorted(bad)} (valid: {OPS})")
            if any(share < 0 for share in mix.values()) or sum(mix.values()) <= 0:
                raise ValueError("mix shares must be >= 0 and add up to more than 0")
        if serializable_reads is not None and not 0.0 <= serializable_reads <= 1.0:
            raise ValueError(f"serializable_reads must be from 0 to 1, got {serializable_reads}")
        if rate is not None:
            self._rate = float(rate)
        if mix is not None:
            total = sum(mix.values())
            self._mix = {op: mix.get(op, 0.0) / total for op in OPS}
        if serializable_reads is not None:
            self._serializable = float(serializable_reads)

    # --------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Start the request driver and the one-second sampler."""
        if self.running:
            return
        started = time.monotonic()
        self._driver = asyncio.create_task(self._drive(), name="etcd-workload-driver")
        self._sampler = asyncio.create_task(
            self._sample_loop(started), name="etcd-workload-sampler"
        )

    async def stop(self) -> None:
        """Stop sending, let requests in flight finish (bounded), close the clients."""
        await self.pause()
        await self._close_clients()

    async def _close_clients(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()

    def _client(self, name: str) -> EtcdClient:
        """One client per endpoint, opened on first use (again after stop())."""
        client = self._clients.get(name)
        if client is None:
            username, password = self._credentials
            client = EtcdClient(
                self._endpoints[name],
                tls=self._tls,
                username=username,
                password=password,
                timeout=self.timeout_s,
            )
            self._clients[name] = client
        return client

    async def pause(self) -> None:
        """Stop sending and wait for requests in flight; the clients stay open for read-back."""
        tasks = [t for t in (self._driver, self._sampler) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._driver = self._sampler = None
        if self._in_flight:
            pending = list(self._in_flight)
            _, still = await asyncio.wait(pending, timeout=3 * self.timeout_s + 1.0)
            for task in still:
                task.cancel()
            await asyncio.gather(*still, return_exceptions=True)

    # ----------------------------------------------------------------- traffic

    async def _drive(self) -> None:
        next_at = time.monotonic()
        while True:
            rate = self._rate
            now = time.monotonic()
            if rate <= 0:
                await asyncio.sleep(MAX_DRIVER_SLEEP_S)
                next_at = time.monotonic()
                continue
            if next_at < now - MAX_BACKLOG_S:
                next_at = now
            while next_at <= now:
                self._fire()
                next_at += 1.0 / rate
            await asyncio.sleep(min(max(next_at - time.monotonic(), 0.0), MAX_DRIVER_SLEEP_S))

    def _choose_op(self) -> str:
        roll = self._rng.random()
        for op in OPS:
            share = self._mix.get(op, 0.0)
            if roll < share:
                return op
            roll -= share
        return "put"

    def _fire(self) -> None:
        kind = self._choose_op()
        free = [k for k in self._keys if k not in self._busy]
        if not free or len(self._in_flight) >= self.max_in_flight:
            self._ops.append(_Op(time.monotonic(), kind, None, False, error="overload"))
            return
        key = self._rng.choice(free)
        self._busy.add(key)
        self._seq += 1
        task = asyncio.create_task(self._run(kind, key, f"v{self._seq}"))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    def _rotation(self) -> list[str]:
        """Endpoints from the next in turn, those that failed lately last."""
        start = self._rr % len(self._names)
        self._rr += 1
        ordered = self._names[start:] + self._names[:start]
        now = time.monotonic()
        return [n for n in ordered if self._benched.get(n, 0) <= now] + [
            n for n in ordered if self._benched.get(n, 0) > now
        ]

    async def _run(self, kind: str, key: str, value: str) -> None:
        sent = time.monotonic()
        error: EtcdError | None = None
        member: str | None = None
        try:
            for member in self._rotation():
                client = self._client(member)
                try:
                    await self._one(client, kind, key, value)
                except EtcdError as exc:
                    error = exc
                    self._benched[member] = time.monotonic() + BENCH_S
                    if kind == "delete" and getattr(exc, "maybe_sent", True):
                        self.ledger.record_uncertain_delete(key)
                    if isinstance(exc, EtcdRequestError) and exc.no_space:
                        break  # every member would refuse it the same way
                    if time.monotonic() - sent > 2 * self.timeout_s:
                        break
                    continue
                latency = (time.monotonic() - sent) * 1000.0
                self._ops.append(_Op(time.monotonic(), kind, member, True, latency))
                return
            kind_of_error = _error_kind(error) if error is not None else "no_endpoint"
            self._ops.append(_Op(time.monotonic(), kind, member, False, error=kind_of_error))
        finally:
            self._busy.discard(key)

    async def _one(self, client: EtcdClient, kind: str, key: str, value: str) -> None:
        if kind == "put":
            put = await client.put(key, value)
            self.ledger.record(Ack(key, "put", put.revision, value))
        elif kind == "delete":
            deleted = await client.delete(key)
            self.ledger.record(Ack(key, "delete", deleted.revision))
        else:
            serializable = self._serializable > 0 and self._rng.random() < self._serializable
            await client.get(key, serializable=serializable)

    # ----------------------------------------------------------------- checker

    async def lost_writes(self) -> list[LostWrite]:
        """Read every key back linearizably and return the acknowledged writes it lacks."""
        snapshot = self.ledger.snapshot()
        failures: list[str] = []
        stopped = not self._clients and not self.running
        try:
            for name in self._rotation():
                try:
                    result = await self._client(name).range(
                        self.prefix, prefix=True, timeout=READ_BACK_TIMEOUT_S
                    )
                except EtcdError as exc:
                    failures.append(str(exc))
                    continue
                found = {kv.key: kv for kv in result.kvs}
                return WriteLedger.check(snapshot, found)
        finally:
            if stopped:  # called after stop(): leave nothing open
                await self._close_clients()
        raise EtcdError(
            ", ".join(self._endpoints.values()),
            "cannot read the workload's keys back from any endpoint: " + "; ".join(failures),
        )

    async def lost_writes_now(self) -> tuple[list[LostWrite], int]:
        """The same check while traffic runs: keys with a request in flight, or acknowledged
        anew during the read, are left out (their fate is not settled). Returns the lost
        writes and how many keys were checked."""
        before, busy_before = self.ledger.snapshot(), frozenset(self._busy)
        failures: list[str] = []
        for name in self._rotation():
            try:
                result = await self._client(name).range(
                    self.prefix, prefix=True, timeout=READ_BACK_TIMEOUT_S
                )
            except EtcdError as exc:
                failures.append(str(exc))
                continue
            after = self.ledger.snapshot()
            settled = WriteLedger.settled(before, after, busy_before | frozenset(self._busy))
            found = {kv.key: kv for kv in result.kvs}
            return WriteLedger.check(settled, found), len(settled.acks)
        raise EtcdError(
            ", ".join(self._endpoints.values()),
            "cannot read the workload's keys back from any endpoint: " + "; ".join(failures),
        )

    def window(self, seconds: float) -> WindowStats:
        """Every request that finished in the last `seconds`, in total and per member."""
        now = time.monotonic()
        return window_stats(self._ops, now - seconds, now)

    # ---------------------------------------------------------------- sampling

    async def _sample_loop(self, started: float) -> None:
        last = started
        next_tick = started + SAMPLE_INTERVAL_S
        while True:
            await asyncio.sleep(max(next_tick - time.monotonic(), 0.0))
            leader, changes = await self._poll_leader()
            now = time.monotonic()
            while next_tick <= now:
                next_tick += SAMPLE_INTERVAL_S
            try:
                sample = self._sample(last, now, leader, changes)
            except Exception:
                log.exception("etcd workload could not build a sample")
                continue
            finally:
                last = now
            self.history.append(sample)
            self.latest = sample
            self._prune(now)
            if self._on_sample is not None:
                try:
                    self._on_sample(sample)
                except Exception:
                    log.exception("on_sample callback failed")

    async def _poll_leader(self) -> tuple[tuple[str, int] | None, int]:
        """The leader the members report at the highest term, and whether it changed."""

        async def one(name: str) -> tuple[str, Status | None]:
            try:
                return name, await self._client(name).status(timeout=0.5)
            except EtcdError:
                return name, None

        found = await asyncio.gather(*(one(n) for n in self._names))
        best: Status | None = None
        for name, status in found:
            if status is None:
                continue
            self._member_ids[status.member_id] = name
            if status.leader and (best is None or status.raft_term > best.raft_term):
                best = status
        if best is None:
            return None, 0
        leader = (self._member_ids.get(best.leader, f"{best.leader:x}"), best.raft_term)
        previous = self._leader
        if previous is not None and leader[1] < previous[1]:
            return previous, 0  # only members behind the times answered
        self._leader = leader
        return leader, int(previous is not None and leader != previous)

    def _sample(
        self, since: float, until: float, leader: tuple[str, int] | None, changes: int
    ) -> dict[str, Any]:
        tally = _Tally()
        for op in self._ops:
            if not since < op.at <= until:
                continue
            member = tally.per_member.setdefault(op.member or "none", Counter())
            if op.ok:
                tally.counts[op.kind] += 1
                member["ops"] += 1
                if op.latency_ms is not None:
                    tally.latencies.append(op.latency_ms)
            else:
                tally.errors += 1
                tally.error_kinds[op.error] += 1
                member["errors"] += 1
        span = max(until - since, 1e-6)
        return {
            "at": datetime.now(UTC).isoformat(),
            "interval_s": round(span, 3),
            "puts_per_s": tally.counts["put"] / span,
            "gets_per_s": tally.counts["get"] / span,
            "deletes_per_s": tally.counts["delete"] / span,
            "errors_per_s": tally.errors / span,
            "p50_ms": percentile(tally.latencies, 50),
            "p99_ms": percentile(tally.latencies, 99),
            "leader": leader[0] if leader else None,
            "raft_term": leader[1] if leader else None,
            "leader_changes": changes,
            "acknowledged_writes": self.ledger.acknowledged,
            "error_kinds": dict(tally.error_kinds),
            "per_member": {
                name: {"ops": c["ops"], "errors": c["errors"]}
                for name, c in tally.per_member.items()
            },
        }

    def _prune(self, now: float) -> None:
        cutoff = now - 60.0
        while self._ops and self._ops[0].at <= cutoff:
            self._ops.popleft()
