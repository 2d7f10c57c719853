"""The rate limiter's clients as a process of their own: the load generator (clients and load
balancer) behind a small HTTP API.

`python -m operator_console.lab.ratelimiter.clients --targets '{"node-1": "http://..."}' ...`

It runs outside the console so that what it measures is the cluster's behaviour, not the
console's: a busy screen in the console no longer shows up as cluster latency. The console reads
its samples, per-node stats and ground truth over the API, and drains nodes through it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from operator_console.domain import WorkloadSample
from operator_console.lab.ratelimiter.loadgen import LoadGenerator

log = logging.getLogger(__name__)

WARM_UP_S = 1.5
KEPT_SAMPLES = 300


class ClientsService:
    """The generator and the samples it produced, numbered so a reader never misses one."""

    def __init__(self, generator_args: dict[str, Any]) -> None:
        self.samples: deque[dict[str, Any]] = deque(maxlen=KEPT_SAMPLES)
        self._seq = 0
        self.generator = LoadGenerator(on_sample=self._keep, **generator_args)
        self.warm = False

    def _keep(self, sample: WorkloadSample) -> None:
        if not self.warm:
            return  # the first answers of fresh processes are slow: not the cluster's behaviour
        self._seq += 1
        self.samples.append(
            {
                "seq": self._seq,
                "at": sample.at.isoformat(),
                "values": dict(sample.values),
                "per_target": {k: dict(v) for k, v in sample.per_target.items()},
            }
        )

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        await self.generator.start()
        warm = asyncio.create_task(self._warm_up())
        try:
            yield
        finally:
            warm.cancel()
            await self.generator.stop()

    async def _warm_up(self) -> None:
        await asyncio.sleep(WARM_UP_S)
        self.generator.clear_stats()
        self.warm = True

    # ------------------------------------------------------------------------ the API

    async def health(self, _request: Request) -> JSONResponse:
        return JSONResponse({"ok": True, "warm": self.warm, "rate": self.generator.rate})

    async def sample(self, request: Request) -> JSONResponse:
        after = int(request.query_params.get("after", "0"))
        return JSONResponse(
            {"warm": self.warm, "samples": [s for s in self.samples if s["seq"] > after]}
        )

    async def stats(self, request: Request) -> JSONResponse:
        window = float(request.query_params.get("window_s", "5"))
        stats = self.generator.target_stats(window)
        return JSONResponse({name: s.to_dict() for name, s in stats.items()})

    async def truth(self, request: Request) -> JSONResponse:
        """Allowed responses per key in the window given for that key (or the default)."""
        body = await request.json()
        windows = {str(k): float(v) for k, v in (body.get("windows") or {}).items()}
        default = body.get("default_window_s")
        truth = self.generator.ground_truth
        now = time.monotonic()
        counts = {}
        for key in truth.keys():
            window = windows.get(key, default)
            if window is not None:
                counts[key] = truth.allowed_in_window(key, float(window), now)
        return JSONResponse({"allowed": counts})

    async def rotation(self, _request: Request) -> JSONResponse:
        return JSONResponse(self._rotation())

    def _rotation(self) -> dict[str, Any]:
        return {
            "rotation": self.generator.rotation,
            "drained": sorted(self.generator.drained),
            "targets": sorted(self.generator.targets),
        }

    async def drain(self, request: Request) -> JSONResponse:
        node = request.path_params["node"]
        if node not in self.generator.targets:
            return JSONResponse({"error": f"unknown node {node!r}"}, status_code=404)
        if request.method == "DELETE":
            self.generator.undrain(node)
        else:
            self.generator.drain(node)
        return JSONResponse(self._rotation())

    async def traffic(self, request: Request) -> JSONResponse:
        body = await request.json()
        try:
            if "rate" in body:
                self.generator.set_rate(float(body["rate"]))
            if "hot_keys" in body:
                self.generator.set_hot_keys({str(k): float(v) for k, v in body["hot_keys"].items()})
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"rate": self.generator.rate})

    def routes(self) -> list[Route]:
        return [
            Route("/api/health", self.health),
            Route("/api/samples", self.sample),
            Route("/api/stats", self.stats),
            Route("/api/truth", self.truth, methods=["POST"]),
            Route("/api/rotation", self.rotation),
            Route("/api/drain/{node}", self.drain, methods=["POST", "DELETE"]),
            Route("/api/traffic", self.traffic, methods=["PUT"]),
        ]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m operator_console.lab.ratelimiter.clients",
        description="Drive rate limiter nodes as clients and load balancer, behind an HTTP API.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--targets", required=True, help='JSON: {"node-1": "http://..."}')
    p.add_argument("--rate", type=float, default=60.0)
    p.add_argument("--keys", type=int, default=20)
    p.add_argument("--hot-keys", default="{}", help='JSON: {"user:hot": 0.4}')
    p.add_argument("--timeout-s", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)
    return p


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level="INFO", format="%(asctime)s %(levelname)s [clients] %(message)s"
    )
    service = ClientsService(
        {
            "targets": json.loads(args.targets),
            "rate": args.rate,
            "keys": [f"user:{i}" for i in range(1, args.keys + 1)],
            "hot_keys": json.loads(args.hot_keys),
            "timeout_s": args.timeout_s,
            "seed": args.seed,
        }
    )
    app = Starlette(routes=service.routes(), lifespan=service.lifespan)

    import uvicorn

    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop="asyncio",
        workers=1,
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=3,
    )


if __name__ == "__main__":
    main()
