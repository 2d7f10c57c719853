"""A rate limiter node's state (store client, limits, failpoints, counters) and its loops."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from starlette.applications import Starlette

from operator_console.lab.ratelimiter.limiter import SlidingWindowLimiter
from operator_console.lab.ratelimiter.node_config import LimitRule, LimitsCache
from operator_console.lab.ratelimiter.node_failpoints import Failpoints
from operator_console.lab.ratelimiter.node_metrics import CheckCounters, NodeMetrics

FAIL_MODES = ("open", "closed")
NODE_KEY_PREFIX = "rl:nodes:"
# TimeoutError is an OSError; both cover a paused store and a cut link.
STORE_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError)

log = logging.getLogger("operator_console.lab.ratelimiter.node")


@dataclass(slots=True)
class NodeSettings:
    """Everything a node needs to start; the CLI fills it, tests may build it directly."""

    name: str
    store_url: str
    host: str = "127.0.0.1"
    port: int = 8080
    fail_mode: str = "open"
    default_limit: int = 100
    default_window_ms: int = 5000
    config_refresh_s: float = 1.0
    heartbeat_s: float = 1.0
    socket_timeout_s: float = 0.5
    socket_connect_timeout_s: float = 0.5
    health_ping_timeout_s: float = 0.75
    max_tracked_keys: int = 1000
    log_level: str = "info"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def store_error_text(exc: BaseException) -> str:
    """One line naming why the store could not be used."""
    return f"store unreachable: {type(exc).__name__}: {exc}"


class RateLimiterNode:
    """One node's state; its background loops keep its registration and limits current."""

    def __init__(self, settings: NodeSettings) -> None:
        self.settings = settings
        self.name = settings.name
        self.fail_mode = settings.fail_mode
        self.redis: Redis = Redis.from_url(
            settings.store_url,
            socket_timeout=settings.socket_timeout_s,
            socket_connect_timeout=settings.socket_connect_timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        self.limiter = SlidingWindowLimiter(self.redis)
        self.failpoints = Failpoints(settings.name)
        self.cache = LimitsCache(
            LimitRule(settings.default_limit, settings.default_window_ms),
            settings.config_refresh_s,
        )
        self.counters = CheckCounters(settings.max_tracked_keys)
        self.metrics = NodeMetrics(
            settings.name,
            failpoints=self.failpoints,
            config_version=lambda: float(self.cache.version),
            config_age_s=lambda: self.cache.age_s,
        )
        self.pid = os.getpid()
        self.started_at = datetime.now(UTC)
        self._started = time.monotonic()
        self._sequence = itertools.count()
        self._failing: set[str] = set()

    # -- clock and store ------------------------------------------------------------------

    def clock_ms(self) -> int:
        """This node's wall clock in ms, including any injected skew."""
        return int(time.time() * 1000) + self.failpoints.clock_skew_ms

    def member_prefix(self, now_ms: int) -> str:
        """A sorted-set member prefix no other request, on any node, will ever produce."""
        return f"{self.name}:{self.pid}:{now_ms}:{next(self._sequence)}"

    @property
    def uptime_s(self) -> float:
        return time.monotonic() - self._started

    def failed(self, what: str, exc: BaseException) -> None:
        if what not in self._failing:
            self._failing.add(what)
            log.warning("node %s: %s failing: %s", self.name, what, store_error_text(exc))

    def recovered(self, what: str) -> None:
        if what in self._failing:
            self._failing.discard(what)
            log.info("node %s: %s recovered", self.name, what)

    async def ping(self) -> tuple[bool, float | None, str | None]:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.settings.health_ping_timeout_s):
                await self.redis.ping()
        except STORE_ERRORS as exc:
            return False, None, store_error_text(exc)
        return True, round((time.perf_counter() - started) * 1000, 3), None

    def heartbeat(self) -> dict[str, Any]:
        return {
            "node": self.name,
            "url": self.settings.url,
            "pid": self.pid,
            "started_at": self.started_at.isoformat(),
            "config_version": self.cache.version,
            "fail_mode": self.fail_mode,
            "at": datetime.fromtimestamp(self.clock_ms() / 1000, UTC).isoformat(),
        }

    async def heartbeat_loop(self) -> None:
        """Keep this node registered; the key expires on its own if the node dies."""
        ttl_ms = max(1, int(self.settings.heartbeat_s * 3000))
        while True:
            try:
                await self.redis.set(
                    NODE_KEY_PREFIX + self.name, json.dumps(self.heartbeat()), px=ttl_ms
                )
                self.recovered("heartbeat")
            except STORE_ERRORS as exc:
                self.failed("heartbeat", exc)
            except Exception:
                log.exception("node %s: heartbeat crashed; retrying", self.name)
            await asyncio.sleep(self.settings.heartbeat_s)

    async def config_refresh_loop(self) -> None:
        """Follow limit changes made through any node; hangs while the stuck failpoint is on."""
        while True:
            await self.failpoints.wait_until_refresh_unstuck()
            try:
                await self.cache.refresh(self.redis)
                self.recovered("config refresh")
            except STORE_ERRORS as exc:
                self.failed("config refresh", exc)
            except Exception:
                log.exception("node %s: config refresh crashed; retrying", self.name)
            await asyncio.sleep(self.settings.config_refresh_s)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        try:
            await self.cache.refresh(self.redis)
        except STORE_ERRORS as exc:
            self.failed("config refresh", exc)
        tasks = [
            asyncio.create_task(self.heartbeat_loop(), name=f"{self.name}-heartbeat"),
            asyncio.create_task(self.config_refresh_loop(), name=f"{self.name}-config"),
        ]
        log.info(
            "node %s serving on %s (fail_mode=%s)", self.name, self.settings.url, self.fail_mode
        )
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(*STORE_ERRORS):
                async with asyncio.timeout(0.5):
                    await self.redis.delete(NODE_KEY_PREFIX + self.name)
            await self.redis.aclose()
            log.info("node %s stopped", self.name)
