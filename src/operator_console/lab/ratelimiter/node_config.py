"""A node's cached view of the per-key limits, refreshed from the shared store."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from redis.asyncio import Redis

LIMITS_KEY = "rl:limits"
CONFIG_VERSION_KEY = "rl:config:version"
RESERVED_LIMIT_FIELD = "__default__"

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LimitRule:
    """How many requests one key may make per window."""

    limit: int
    window_ms: int

    def to_dict(self) -> dict[str, int]:
        return {"limit": self.limit, "window_ms": self.window_ms}


def parse_rule(raw: str | bytes) -> LimitRule:
    """Read one `rl:limits` hash value; raises ValueError when it is not a valid rule."""
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError(f"not a limit rule: {raw!r}")
    limit, window_ms = positive_int(data.get("limit")), positive_int(data.get("window_ms"))
    if limit is None or window_ms is None:
        raise ValueError(f"not a limit rule: {raw!r}")
    return LimitRule(limit=limit, window_ms=window_ms)


def positive_int(value: Any) -> int | None:
    """Return ``value`` when it is a JSON integer above zero (never a bool), else None."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class LimitsCache:
    """The limits this node enforces; it only changes when a refresh from the store succeeds."""

    def __init__(self, default: LimitRule, refresh_interval_s: float) -> None:
        self.default = default
        self.refresh_interval_s = refresh_interval_s
        self.version: int = 0
        self.limits: dict[str, LimitRule] = {}
        self._loaded = False
        self._created = time.monotonic()
        self._last_success: float | None = None

    def rule_for(self, key: str) -> LimitRule:
        """Return the cached rule for ``key``, or the default when the store has none."""
        return self.limits.get(key, self.default)

    @property
    def age_s(self) -> float:
        """Seconds since the last successful refresh (since start when there was none)."""
        since = self._last_success if self._last_success is not None else self._created
        return time.monotonic() - since

    @property
    def fresh(self) -> bool:
        return self._last_success is not None and self.age_s < 3 * self.refresh_interval_s

    async def refresh(self, redis: Redis, *, force: bool = False) -> int:
        """Reload the limits when the store's version moved (or when forced); return the version."""
        raw_version = await redis.get(CONFIG_VERSION_KEY)
        version = int(raw_version) if raw_version is not None else 0
        if force or not self._loaded or version != self.version:
            async with redis.pipeline(transaction=True) as pipe:
                pipe.get(CONFIG_VERSION_KEY)
                pipe.hgetall(LIMITS_KEY)
                raw_version, raw_limits = await pipe.execute()
            version = int(raw_version) if raw_version is not None else 0
            self._replace(version, raw_limits)
        self._last_success = time.monotonic()
        return self.version

    def _replace(self, version: int, raw_limits: dict[Any, Any]) -> None:
        limits: dict[str, LimitRule] = {}
        for raw_key, raw_value in raw_limits.items():
            key = _text(raw_key)
            if key == RESERVED_LIMIT_FIELD:
                continue
            try:
                limits[key] = parse_rule(raw_value)
            except ValueError as exc:
                log.warning("ignoring bad limit for %r in %s: %s", key, LIMITS_KEY, exc)
        if version != self.version or not self._loaded:
            log.info("limits config version %d loaded (%d keys)", version, len(limits))
        self.version = version
        self.limits = limits
        self._loaded = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "default": self.default.to_dict(),
            "limits": {k: v.to_dict() for k, v in sorted(self.limits.items())},
        }


async def write_limit(redis: Redis, key: str, rule: LimitRule) -> int:
    """Store one key's rule and bump the config version in one transaction; return the version."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(LIMITS_KEY, key, json.dumps(rule.to_dict()))
        pipe.incr(CONFIG_VERSION_KEY)
        _, version = await pipe.execute()
    return int(version)
