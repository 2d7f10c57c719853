"""The node's HTTP API: rate-limit checks plus the operator endpoints that inspect and steer it."""

from __future__ import annotations

import json
import logging
import math
import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from operator_console.lab.ratelimiter.limiter import window_key
from operator_console.lab.ratelimiter.node_config import (
    RESERVED_LIMIT_FIELD,
    LimitRule,
    positive_int,
    write_limit,
)
from operator_console.lab.ratelimiter.node_failpoints import FAILPOINT_NAMES, UnknownFailpoint
from operator_console.lab.ratelimiter.node_runtime import (
    FAIL_MODES,
    NODE_KEY_PREFIX,
    STORE_ERRORS,
    RateLimiterNode,
    store_error_text,
)

MAX_KEY_LENGTH = 512
MAX_COST = 10_000

log = logging.getLogger("operator_console.lab.ratelimiter.node")


class BadRequest(Exception):
    """A request the caller can fix; answered with 400 and the reason."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except ValueError as exc:
        raise BadRequest("body must be a JSON object") from exc
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object")
    return data


def _key_param(request: Request) -> str:
    key = str(request.path_params["key"])
    if not key or len(key) > MAX_KEY_LENGTH:
        raise BadRequest(f"key must be 1..{MAX_KEY_LENGTH} characters")
    return key


class NodeHandlers:
    """Request handlers bound to one node."""

    def __init__(self, node: RateLimiterNode) -> None:
        self.node = node

    async def check(self, request: Request) -> Response:
        body = await _json_object(request)
        key, cost = body.get("key"), body.get("cost", 1)
        if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
            raise BadRequest(f"key must be a string of 1..{MAX_KEY_LENGTH} characters")
        if not _is_int(cost) or not 1 <= cost <= MAX_COST:
            raise BadRequest(f"cost must be an integer from 1 to {MAX_COST}")
        rule = self.node.cache.rule_for(key)
        started = time.perf_counter()
        payload: dict[str, Any] = {"limit": rule.limit, "node": self.node.name}
        headers: dict[str, str] = {}
        try:
            now_ms = self.node.clock_ms()
            result = await self.node.limiter.check(
                key,
                limit=rule.limit,
                window_ms=rule.window_ms,
                cost=cost,
                now_ms=now_ms,
                member_prefix=self.node.member_prefix(now_ms),
            )
        except STORE_ERRORS as exc:
            self.node.metrics.store_error()
            self.node.failed("check path", exc)
            if self.node.fail_mode == "open":
                outcome, status = "unsynced", 200
                payload.update(allowed=True, remaining=None, reset_ms=None, synced=False)
            else:
                outcome, status = "error", 503
                payload.update(allowed=False, synced=False, error=store_error_text(exc))
        else:
            self.node.recovered("check path")
            outcome = "allowed" if result.allowed else "denied"
            status = 200 if result.allowed else 429
            payload.update(
                allowed=result.allowed,
                remaining=result.remaining,
                reset_ms=result.reset_ms,
                synced=True,
            )
            if not result.allowed:
                headers["Retry-After"] = str(max(1, math.ceil(result.reset_ms / 1000)))
        self.node.metrics.observe_check(outcome, time.perf_counter() - started)
        self.node.counters.record(key, outcome)
        return JSONResponse(payload, status_code=status, headers=headers)

    async def live(self, request: Request) -> Response:
        """The process answers: nothing else is checked (the store may be away)."""
        return JSONResponse({"node": self.node.name, "live": True})

    async def health(self, request: Request) -> Response:
        reachable, latency_ms, error = await self.node.ping()
        fresh = self.node.cache.fresh
        ok = reachable and fresh
        body = {
            "node": self.node.name,
            "ok": ok,
            "pid": self.node.pid,
            "uptime_s": round(self.node.uptime_s, 3),
            "store": {"reachable": reachable, "latency_ms": latency_ms, "error": error},
            "config": {
                "version": self.node.cache.version,
                "age_s": round(self.node.cache.age_s, 3),
                "fresh": fresh,
                "refresh_interval_s": self.node.settings.config_refresh_s,
            },
            "fail_mode": self.node.fail_mode,
            "failpoints": self.node.failpoints.to_dict(),
        }
        return JSONResponse(body, status_code=200 if ok else 503)

    async def nodes(self, request: Request) -> Response:
        keys = [k async for k in self.node.redis.scan_iter(match=NODE_KEY_PREFIX + "*", count=100)]
        values = await self.node.redis.mget(keys) if keys else []
        found = []
        for raw in values:
            if raw is None:  # expired between SCAN and MGET
                continue
            try:
                found.append(json.loads(raw))
            except ValueError:
                log.warning("node %s: ignoring unreadable heartbeat %r", self.node.name, raw)
        found.sort(key=lambda hb: str(hb.get("node", "")) if isinstance(hb, dict) else "")
        return JSONResponse({"nodes": found})

    async def counters(self, request: Request) -> Response:
        return JSONResponse({"node": self.node.name, **self.node.counters.to_dict()})

    async def limits(self, request: Request) -> Response:
        return JSONResponse({"node": self.node.name, **self.node.cache.to_dict()})

    async def put_limit(self, request: Request) -> Response:
        key = _key_param(request)
        if key == RESERVED_LIMIT_FIELD:
            raise BadRequest(f"{RESERVED_LIMIT_FIELD} is reserved; the default comes from the CLI")
        body = await _json_object(request)
        limit = positive_int(body.get("limit"))
        window_ms = positive_int(body.get("window_ms", self.node.settings.default_window_ms))
        if limit is None:
            raise BadRequest("limit must be an integer > 0")
        if window_ms is None:
            raise BadRequest("window_ms must be an integer > 0")
        version = await write_limit(self.node.redis, key, LimitRule(limit, window_ms))
        log.warning(
            "node %s: limit for %r set to %d per %d ms", self.node.name, key, limit, window_ms
        )
        try:
            await self.node.cache.refresh(self.node.redis, force=True)
        except STORE_ERRORS as exc:
            self.node.failed("config refresh", exc)
        return JSONResponse(
            {"key": key, "limit": limit, "window_ms": window_ms, "version": version}
        )

    async def reset_counter(self, request: Request) -> Response:
        key = _key_param(request)
        await self.node.redis.delete(window_key(key))
        log.warning("node %s: window for %r reset", self.node.name, key)
        return JSONResponse({"key": key, "reset": True})

    async def reload_config(self, request: Request) -> Response:
        version = await self.node.cache.refresh(self.node.redis, force=True)
        log.warning("node %s: config reloaded out of band (version %d)", self.node.name, version)
        return JSONResponse({"version": version})

    async def get_failpoints(self, request: Request) -> Response:
        return JSONResponse(self.node.failpoints.to_dict())

    async def put_failpoint(self, request: Request) -> Response:
        name = str(request.path_params["name"])
        body = await _json_object(request)
        if "value" not in body:
            raise BadRequest('body must be {"value": ...}')
        try:
            self.node.failpoints.set(name, body["value"])
        except UnknownFailpoint:
            return _unknown_failpoint(name)
        except ValueError as exc:
            raise BadRequest(str(exc)) from exc
        return JSONResponse(self.node.failpoints.to_dict())

    async def delete_failpoint(self, request: Request) -> Response:
        name = str(request.path_params["name"])
        try:
            self.node.failpoints.clear(name)
        except UnknownFailpoint:
            return _unknown_failpoint(name)
        return JSONResponse(self.node.failpoints.to_dict())

    async def put_fail_mode(self, request: Request) -> Response:
        body = await _json_object(request)
        mode = body.get("mode")
        if mode not in FAIL_MODES:
            raise BadRequest(f"mode must be one of {', '.join(FAIL_MODES)}")
        if mode != self.node.fail_mode:
            log.warning("node %s: fail_mode %s -> %s", self.node.name, self.node.fail_mode, mode)
        self.node.fail_mode = str(mode)
        return JSONResponse({"node": self.node.name, "fail_mode": self.node.fail_mode})

    async def metrics_text(self, request: Request) -> Response:
        return Response(generate_latest(self.node.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def routes(self) -> list[Route]:
        return [
            Route("/check", self.check, methods=["POST"]),
            Route("/api/live", self.live, methods=["GET"]),
            Route("/api/health", self.health, methods=["GET"]),
            Route("/api/nodes", self.nodes, methods=["GET"]),
            Route("/api/counters", self.counters, methods=["GET"]),
            Route("/api/counters/{key:path}/reset", self.reset_counter, methods=["POST"]),
            Route("/api/limits", self.limits, methods=["GET"]),
            Route("/api/limits/{key:path}", self.put_limit, methods=["PUT"]),
            Route("/api/config/reload", self.reload_config, methods=["POST"]),
            Route("/api/failpoints", self.get_failpoints, methods=["GET"]),
            Route("/api/failpoints/{name}", self.put_failpoint, methods=["PUT"]),
            Route("/api/failpoints/{name}", self.delete_failpoint, methods=["DELETE"]),
            Route("/api/fail_mode", self.put_fail_mode, methods=["PUT"]),
            Route("/metrics", self.metrics_text, methods=["GET"]),
        ]


def _unknown_failpoint(name: str) -> Response:
    known = ", ".join(FAILPOINT_NAMES)
    return JSONResponse({"error": f"unknown failpoint {name!r}; known: {known}"}, status_code=404)


async def _bad_request(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": str(exc)}, status_code=400)


async def _store_unreachable(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": store_error_text(exc)}, status_code=503)


EXCEPTION_HANDLERS = {
    BadRequest: _bad_request,
    RedisError: _store_unreachable,
    OSError: _store_unreachable,
}
