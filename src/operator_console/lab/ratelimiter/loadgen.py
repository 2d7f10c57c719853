"""Open-loop load against rate limiter nodes, acting as both the clients and the load balancer.

The generator keeps its own record of what clients were allowed (`GroundTruth`) so that the
limiter's own counters can be checked against what actually got through.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

import httpx

from operator_console.domain import WorkloadSample, utcnow

log = logging.getLogger(__name__)

DEFAULT_KEYS: tuple[str, ...] = tuple(f"user:{i}" for i in range(1, 21))

# How long raw request events are kept for `target_stats`; longer windows are clamped to it.
EVENT_RETENTION_S = 60.0
# How long `GroundTruth` keeps allowed timestamps per key.
GROUND_TRUTH_RETENTION_S = 120.0
# If the driver falls further behind than this (e.g. the process was suspended), the missed
# arrivals are dropped instead of being fired as one burst.
MAX_BACKLOG_S = 1.0
# Longest single sleep of the driver, so that a rate change takes effect promptly.
MAX_DRIVER_SLEEP_S = 0.1
POOL_PER_TARGET = 32
SAMPLE_INTERVAL_S = 1.0

_Event = TypeVar("_Event")


class Outcome(StrEnum):
    ALLOWED = "allowed"
    DENIED = "denied"
    ERROR = "error"


def percentile(values: Sequence[float], pct: float) -> float | None:
    """Return the nearest-rank percentile of `values`, or None when there are none."""
    if not values:
        return None
    if not 0.0 < pct <= 100.0:
        raise ValueError(f"percentile must be in (0, 100], got {pct}")
    ordered = sorted(values)
    rank = math.ceil(pct / 100.0 * len(ordered))
    return ordered[max(rank, 1) - 1]


@dataclass(frozen=True, slots=True)
class TargetStats:
    """What one node did with the traffic sent to it over a recent window."""

    offered: int = 0
    allowed: int = 0
    denied: int = 0
    errors: int = 0
    unsynced: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    error_kinds: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "offered": self.offered,
            "allowed": self.allowed,
            "denied": self.denied,
            "errors": self.errors,
            "unsynced": self.unsynced,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
        }


class GroundTruth:
    """What clients were really allowed, per key, independent of what the limiter reports."""

    def __init__(self, retention_s: float = GROUND_TRUTH_RETENTION_S) -> None:
        self.retention_s = retention_s
        self._allowed: dict[str, list[float]] = {}
        self._latest = -math.inf

    def record(self, key: str, t_monotonic: float, allowed: bool) -> None:
        """Note one response for `key` received at `t_monotonic`; only allowed ones are counted."""
        times = self._allowed.setdefault(key, [])
        self._latest = max(self._latest, t_monotonic)
        if allowed:
            if not times or times[-1] <= t_monotonic:
                times.append(t_monotonic)
            else:
                bisect.insort(times, t_monotonic)
        self._prune(key, self._latest - self.retention_s)

    def allowed_in_window(self, key: str, window_s: float, now: float | None = None) -> int:
        """Count allowed responses for `key` received in (now - window_s, now]."""
        times = self._allowed.get(key)
        if not times:
            return 0
        end = time.monotonic() if now is None else now
        lo = bisect.bisect_right(times, end - window_s)
        hi = bisect.bisect_right(times, end)
        return max(hi - lo, 0)

    def max_allowed_in_window(self, key: str, window_s: float) -> int:
        """Return the most allowed responses any sliding window of `window_s` held for `key`."""
        times = self._allowed.get(key)
        if not times:
            return 0
        best = 0
        start = 0
        # Every window's count is bounded by that of the window ending at its last event.
        for end, t in enumerate(times):
            while times[start] <= t - window_s:
                start += 1
            best = max(best, end - start + 1)
        return best

    def keys(self) -> list[str]:
        """Return the keys seen within the retained history, sorted."""
        return sorted(self._allowed)

    def snapshot(self, window_s: float, now: float | None = None) -> dict[str, int]:
        """Return allowed counts per key over the last `window_s` seconds."""
        end = time.monotonic() if now is None else now
        return {key: self.allowed_in_window(key, window_s, end) for key in self.keys()}

    def prune(self, now: float | None = None) -> None:
        """Drop history older than the retention period, and keys left with nothing."""
        end = time.monotonic() if now is None else now
        for key in list(self._allowed):
            self._prune(key, end - self.retention_s)
            if not self._allowed[key]:
                del self._allowed[key]

    def _prune(self, key: str, cutoff: float) -> None:
        times = self._allowed[key]
        if times and times[0] <= cutoff:
            del times[: bisect.bisect_right(times, cutoff)]


@dataclass(frozen=True, slots=True)
class _Result:
    at: float
    target: str | None
    outcome: Outcome
    latency_ms: float | None = None
    unsynced: bool = False
    error_kind: str = ""


@dataclass(slots=True)
class _Tally:
    offered: int = 0
    allowed: int = 0
    denied: int = 0
    errors: int = 0
    unsynced: int = 0
    latencies: list[float] = field(default_factory=list)
    error_kinds: Counter[str] = field(default_factory=Counter)

    def add(self, result: _Result) -> None:
        if result.outcome is Outcome.ALLOWED:
            self.allowed += 1
        elif result.outcome is Outcome.DENIED:
            self.denied += 1
        else:
            self.errors += 1
            self.error_kinds[result.error_kind] += 1
        if result.unsynced:
            self.unsynced += 1
        if result.latency_ms is not None:
            self.latencies.append(result.latency_ms)

    def stats(self) -> TargetStats:
        return TargetStats(
            offered=self.offered,
            allowed=self.allowed,
            denied=self.denied,
            errors=self.errors,
            unsynced=self.unsynced,
            p50_ms=percentile(self.latencies, 50),
            p99_ms=percentile(self.latencies, 99),
            error_kinds=dict(self.error_kinds),
        )


class LoadGenerator:
    """Sends open-loop `/check` traffic round robin over the nodes in rotation and samples it."""

    def __init__(
        self,
        targets: Mapping[str, str],
        *,
        rate: float = 60.0,
        keys: Sequence[str] = DEFAULT_KEYS,
        hot_keys: Mapping[str, float] | None = None,
        on_sample: Callable[[WorkloadSample], None] | None = None,
        timeout_s: float = 1.0,
        max_in_flight: int = 200,
        seed: int | None = None,
        history: int = 300,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, got {max_in_flight}")
        self._targets: dict[str, str] = dict(targets)
        self._drained: set[str] = set()
        self._rate = 0.0
        self._rate_version = 0
        self.set_rate(rate)
        self._keys: tuple[str, ...] = tuple(keys)
        self._hot: list[tuple[str, float]] = []
        self.set_hot_keys(hot_keys or {})
        self._on_sample = on_sample
        self.timeout_s = timeout_s
        self.max_in_flight = max_in_flight
        self._rng = random.Random(seed)
        self._rr = 0

        self.history: deque[WorkloadSample] = deque(maxlen=history)
        self.latest: WorkloadSample | None = None
        self.ground_truth = GroundTruth()

        self._offers: deque[tuple[float, str | None]] = deque()
        self._results: deque[_Result] = deque()
        self._in_flight: set[asyncio.Task[None]] = set()
        # One small pool per node: httpcore scans its whole pool for every request, so one
        # pool sized for all in-flight requests costs O(n^2) just when a node slows down.
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._open = False
        self._driver: asyncio.Task[None] | None = None
        self._sampler: asyncio.Task[None] | None = None

    # -- control -------------------------------------------------------------------------------

    @property
    def rate(self) -> float:
        return self._rate

    def set_rate(self, rate: float) -> None:
        """Change the arrival rate (requests per second); 0 pauses the traffic."""
        if rate < 0 or math.isnan(rate) or math.isinf(rate):
            raise ValueError(f"rate must be a finite number >= 0, got {rate}")
        self._rate = float(rate)
        self._rate_version += 1

    def clear_stats(self) -> None:
        """Forget the per-target request records (not the ground truth): warm-up is over."""
        self._offers.clear()
        self._results.clear()

    def set_hot_keys(self, hot_keys: Mapping[str, float]) -> None:
        """Replace the hot keys and their shares of the traffic (a surge on one key)."""
        hot = dict(hot_keys)
        for key, share in hot.items():
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"hot key {key!r} share must be between 0 and 1, got {share}")
        total_hot = sum(hot.values())
        if total_hot > 1.0 + 1e-9:
            raise ValueError(f"hot key shares add up to {total_hot:.3f}; they must be at most 1")
        if not self._keys and total_hot < 1.0 - 1e-9:
            raise ValueError("keys is empty; give at least one key or hot keys that cover 100%")
        self._hot = list(hot.items())

    @property
    def targets(self) -> dict[str, str]:
        return dict(self._targets)

    def set_targets(self, targets: Mapping[str, str]) -> None:
        """Replace the node addresses; drained nodes that remain stay drained."""
        self._targets = dict(targets)
        self._drained &= set(self._targets)

    def drain(self, name: str) -> None:
        """Take a node out of rotation so that it receives no new requests."""
        self._require_target(name)
        self._drained.add(name)
        log.info("drained %s; rotation is now %s", name, self.rotation)

    def undrain(self, name: str) -> None:
        """Put a drained node back into rotation."""
        self._require_target(name)
        self._drained.discard(name)
        log.info("undrained %s; rotation is now %s", name, self.rotation)

    @property
    def rotation(self) -> list[str]:
        return [name for name in self._targets if name not in self._drained]

    @property
    def drained(self) -> frozenset[str]:
        return frozenset(self._drained)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def running(self) -> bool:
        return self._driver is not None and not self._driver.done()

    def _require_target(self, name: str) -> None:
        if name not in self._targets:
            known = ", ".join(self._targets) or "none"
            raise KeyError(f"unknown target {name!r}; known targets: {known}")

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the HTTP client and start the arrival driver and the one-second sampler."""
        if self.running:
            return
        self._open = True
        started = time.monotonic()
        self._driver = asyncio.create_task(self._drive(), name="loadgen-driver")
        self._sampler = asyncio.create_task(self._sample_loop(started), name="loadgen-sampler")
        log.info("load generator started at %.1f rps over %s", self._rate, self.rotation)

    async def stop(self) -> None:
        """Stop sending, give in-flight requests a bounded time to finish, and close the client."""
        tasks = [t for t in (self._driver, self._sampler) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._driver = self._sampler = None
        if self._in_flight:
            pending = list(self._in_flight)
            _, still = await asyncio.wait(pending, timeout=self.timeout_s + 0.5)
            for task in still:
                task.cancel()
            if still:
                await asyncio.gather(*still, return_exceptions=True)
        self._open = False
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()
        log.info("load generator stopped")

    # -- traffic -------------------------------------------------------------------------------

    async def _drive(self) -> None:
        next_at = time.monotonic()
        version = self._rate_version
        while True:
            try:
                rate = self._rate
                if rate <= 0.0:
                    await asyncio.sleep(MAX_DRIVER_SLEEP_S)
                    next_at = time.monotonic()
                    version = self._rate_version
                    continue
                now = time.monotonic()
                if version != self._rate_version:
                    version = self._rate_version
                    next_at = now + self._rng.expovariate(rate)
                if next_at < now - MAX_BACKLOG_S:
                    log.warning("load generator fell %.1fs behind; skipping", now - next_at)
                    next_at = now
                fired = 0
                while next_at <= now and fired < 10_000:
                    self._fire()
                    fired += 1
                    next_at += self._rng.expovariate(rate)
                await asyncio.sleep(min(max(next_at - time.monotonic(), 0.0), MAX_DRIVER_SLEEP_S))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("load generator driver step failed")
                await asyncio.sleep(MAX_DRIVER_SLEEP_S)

    def _choose_key(self) -> str:
        roll = self._rng.random()
        for key, share in self._hot:
            if roll < share:
                return key
            roll -= share
        if not self._keys:
            return self._hot[-1][0]
        return self._rng.choice(self._keys)

    def _choose_target(self) -> str | None:
        rotation = self.rotation
        if not rotation:
            return None
        name = rotation[self._rr % len(rotation)]
        self._rr += 1
        return name

    def _fire(self) -> None:
        now = time.monotonic()
        key = self._choose_key()
        target = self._choose_target()
        self._offers.append((now, target))
        if target is None:
            self._record(_Result(now, None, Outcome.ERROR, error_kind="no_target"))
            return
        if len(self._in_flight) >= self.max_in_flight or not self._open:
            self._record(_Result(now, target, Outcome.ERROR, error_kind="overload"))
            return
        base = self._targets[target].rstrip("/")
        task = asyncio.create_task(self._send(self._client_for(base), target, base + "/check", key))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    def _client_for(self, base_url: str) -> httpx.AsyncClient:
        client = self._clients.get(base_url)
        if client is None:
            size = min(self.max_in_flight, POOL_PER_TARGET)
            client = httpx.AsyncClient(
                timeout=self.timeout_s,
                limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
            )
            self._clients[base_url] = client
        return client

    async def _send(self, client: httpx.AsyncClient, target: str, url: str, key: str) -> None:
        sent = time.monotonic()
        try:
            async with asyncio.timeout(self.timeout_s):
                response = await client.post(url, json={"key": key, "cost": 1})
        except (TimeoutError, httpx.TimeoutException):
            self._error(target, "timeout")
            return
        except httpx.ConnectError:
            self._error(target, "connect")
            return
        except httpx.HTTPError as exc:
            self._error(target, type(exc).__name__)
            return
        received = time.monotonic()
        latency_ms = (received - sent) * 1000.0
        if response.status_code == 429:
            self.ground_truth.record(key, received, allowed=False)
            self._record(_Result(received, target, Outcome.DENIED, latency_ms))
            return
        if response.status_code != 200:
            self._error(target, f"status_{response.status_code}")
            return
        try:
            body = response.json()
        except ValueError:
            self._error(target, "bad_body")
            return
        if not isinstance(body, dict):
            self._error(target, "bad_body")
            return
        if body.get("allowed") is False:
            self.ground_truth.record(key, received, allowed=False)
            self._record(_Result(received, target, Outcome.DENIED, latency_ms))
            return
        self.ground_truth.record(key, received, allowed=True)
        unsynced = body.get("synced") is False
        self._record(_Result(received, target, Outcome.ALLOWED, latency_ms, unsynced=unsynced))

    def _error(self, target: str, kind: str) -> None:
        log.debug("request to %s failed: %s", target, kind)
        self._record(_Result(time.monotonic(), target, Outcome.ERROR, error_kind=kind))

    def _record(self, result: _Result) -> None:
        self._results.append(result)

    # -- sampling ------------------------------------------------------------------------------

    async def _sample_loop(self, started: float) -> None:
        last = started
        next_tick = started + SAMPLE_INTERVAL_S
        while True:
            await asyncio.sleep(max(next_tick - time.monotonic(), 0.0))
            now = time.monotonic()
            while next_tick <= now:
                next_tick += SAMPLE_INTERVAL_S
            try:
                sample = self._sample(last, now)
            except Exception:
                log.exception("load generator could not build a sample")
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

    def _sample(self, since: float, until: float) -> WorkloadSample:
        total, per_target = self._tally(since, until)
        return WorkloadSample(
            at=utcnow(),
            values={
                "offered": total.offered,
                "allowed": total.allowed,
                "denied": total.denied,
                "errors": total.errors,
                "p50_ms": percentile(total.latencies, 50),
                "p99_ms": percentile(total.latencies, 99),
            },
            per_target={name: tally.stats().to_dict() for name, tally in per_target.items()},
        )

    def target_stats(self, window_s: float = 5.0) -> dict[str, TargetStats]:
        """Return per-node stats over the last `window_s` seconds (at most the event retention)."""
        now = time.monotonic()
        _, per_target = self._tally(now - min(window_s, EVENT_RETENTION_S), now)
        return {name: tally.stats() for name, tally in per_target.items()}

    def _tally(self, since: float, until: float) -> tuple[_Tally, dict[str, _Tally]]:
        """Count offers sent and results received in (since, until]."""
        total = _Tally()
        per_target: dict[str, _Tally] = {name: _Tally() for name in self._targets}
        for at, target in _newest_in(self._offers, since, lambda o: o[0]):
            if at > until:
                continue
            total.offered += 1
            if target is not None:
                per_target.setdefault(target, _Tally()).offered += 1
        for result in _newest_in(self._results, since, lambda r: r.at):
            if result.at > until:
                continue
            total.add(result)
            if result.target is not None:
                per_target.setdefault(result.target, _Tally()).add(result)
        return total, per_target

    def _prune(self, now: float) -> None:
        cutoff = now - EVENT_RETENTION_S
        while self._offers and self._offers[0][0] <= cutoff:
            self._offers.popleft()
        while self._results and self._results[0].at <= cutoff:
            self._results.popleft()
        self.ground_truth.prune(now)


def _newest_in(
    events: deque[_Event], since: float, when: Callable[[_Event], float]
) -> Iterable[_Event]:
    """Yield events newer than `since`, walking back from the newest (events are time-ordered)."""
    for event in reversed(events):
        if when(event) <= since:
            return
        yield event
