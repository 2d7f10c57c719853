"""The sliding-window check, run as one Lua script so every node sees the same atomic count."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from redis.asyncio import Redis

WINDOW_KEY_PREFIX = "rl:window:"

# The caller's clock is ARGV[1], not Valkey's TIME: a node whose clock runs ahead evicts the
# entries every other node wrote, which is exactly the hazard of client-supplied timestamps.
SLIDING_WINDOW_LUA = """
local key = KEYS[1]
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local member_prefix = ARGV[5]

redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
local count = redis.call('ZCARD', key)

local function reset_ms()
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if oldest[2] == nil then
    return 0
  end
  local reset = tonumber(oldest[2]) + window - now
  if reset < 0 then
    return 0
  end
  return reset
end

if count + cost <= limit then
  for i = 1, cost do
    redis.call('ZADD', key, now, member_prefix .. ':' .. i)
  end
  redis.call('PEXPIRE', key, window * 2)
  return {1, limit - count - cost, reset_ms()}
end

local remaining = limit - count
if remaining < 0 then
  remaining = 0
end
return {0, remaining, reset_ms()}
"""


def window_key(key: str) -> str:
    """Return the sorted-set key that holds one rate-limit key's recent requests."""
    return f"{WINDOW_KEY_PREFIX}{key}"


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The verdict of one sliding-window check, as the store computed it."""

    allowed: bool
    limit: int
    remaining: int
    reset_ms: int


class SlidingWindowLimiter:
    """Runs the sliding-window script against the shared store with the caller's clock."""

    def __init__(self, redis: Redis) -> None:
        self._script = redis.register_script(SLIDING_WINDOW_LUA)

    async def check(
        self,
        key: str,
        *,
        limit: int,
        window_ms: int,
        cost: int,
        now_ms: int,
        member_prefix: str,
    ) -> CheckResult:
        """Count ``cost`` requests against ``key`` if they fit in the window, atomically."""
        raw = await self._script(
            keys=[window_key(key)],
            args=[now_ms, window_ms, limit, cost, member_prefix],
        )
        allowed, remaining, reset_ms = (int(v) for v in raw)
        return CheckResult(
            allowed=bool(allowed),
            limit=limit,
            remaining=remaining,
            reset_ms=reset_ms,
        )
