"""The etcd clients as a process of their own: the workload (puts, gets and deletes over every
member) and its ledger of acknowledged writes, behind a small HTTP API.

`python -m operator_console.lab.etcd.clients --port P --endpoints '{"member-1": "http://..."}'`

It runs outside the console so that what it measures is the cluster's behaviour, not the
console's: parsing the members' /metrics or drawing the screen no longer shows up as cluster
latency. The console reads its samples, windows and ledger checks over the API, changes its
traffic through it, and asks it for the final read-back when the run ends. A password never goes
on argv: `--auth-file` names a 0600 file in the run folder that the process reads and deletes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import secrets
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from operator_console.lab.etcd.client import ClientTLS, EtcdError
from operator_console.lab.etcd.ledger import LostWrite
from operator_console.lab.etcd.workload import EtcdWorkload

log = logging.getLogger(__name__)

MODULE = "operator_console.lab.etcd.clients"
KEPT_SAMPLES = 300


# --------------------------------------------------------------------- the credentials file


def write_auth_file(run_dir: Path, username: str, password: str) -> Path:
    """A 0600 file only this user can read, created fresh (never over an existing file)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / f".clients-auth-{secrets.token_hex(8)}.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump({"username": username, "password": password}, fh)
    return path


def read_auth_file(path: Path) -> tuple[str, str]:
    """The username and password, and the file is gone: nothing keeps them on disk."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return str(data["username"]), str(data["password"])


# ------------------------------------------------------------------------------ the service


def check_view(at: float, checked: int, lost: list[LostWrite], error: str | None) -> dict[str, Any]:
    """One ledger check as the API reports it (its age, so any clock can place it)."""
    return {"at": at, "checked": checked, "lost": [w.to_dict() for w in lost], "error": error}


def _aged(check: dict[str, Any] | None) -> dict[str, Any] | None:
    if check is None:
        return None
    view = {k: v for k, v in check.items() if k != "at"}
    view["age_s"] = round(time.monotonic() - check["at"], 3)
    return view


class ClientsService:
    """The workload, its samples numbered so a reader never misses one, and its ledger checks."""

    def __init__(
        self, workload_args: Mapping[str, Any], *, check_every_s: float, warm_up_s: float
    ) -> None:
        self.workload = EtcdWorkload(on_sample=self._keep, **workload_args)
        self.check_every_s = check_every_s
        self.warm_up_s = warm_up_s
        self.samples: deque[dict[str, Any]] = deque(maxlen=KEPT_SAMPLES)
        self.check: dict[str, Any] | None = None
        self.final: dict[str, Any] | None = None
        self._seq = 0
        self._warm_until = float("inf")
        self._checker: asyncio.Task[None] | None = None
        self._finishing = asyncio.Lock()

    @property
    def warm(self) -> bool:
        return time.monotonic() >= self._warm_until

    def _keep(self, raw: dict[str, Any]) -> None:
        self._seq += 1
        self.samples.append({"seq": self._seq, **raw, "check": self.check})

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        await self.workload.start()
        # Fresh members answer their first requests slowly (connections, first fsyncs, lazy
        # setup); windows leave that out.
        self._warm_until = time.monotonic() + self.warm_up_s
        self._checker = asyncio.create_task(self._check_loop(), name="etcd-ledger-check")
        try:
            yield
        finally:
            await self._stop_checker()
            await self.workload.stop()

    async def _stop_checker(self) -> None:
        if self._checker is not None:
            self._checker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checker
            self._checker = None

    async def _check_loop(self) -> None:
        while True:
            await asyncio.sleep(self.check_every_s)
            await self.check_now()

    async def check_now(self) -> dict[str, Any]:
        """Read every settled key back while traffic runs and compare with the ledger."""
        try:
            lost, checked = await self.workload.lost_writes_now()
            check = check_view(time.monotonic(), checked, lost, None)
        except EtcdError as exc:
            check = check_view(time.monotonic(), 0, [], str(exc)[:300])
        if check["lost"]:
            log.error("acknowledged writes missing: %s", check["lost"])
        self.check = check
        return check

    async def finish(self) -> dict[str, Any]:
        """Stop sending, let requests in flight end, and read every key back (once)."""
        async with self._finishing:
            if self.final is not None:
                return self.final
            await self._stop_checker()
            workload = self.workload
            await workload.pause()
            try:
                lost = await workload.lost_writes()
                final = check_view(time.monotonic(), len(workload.ledger.keys()), lost, None)
            except EtcdError as exc:
                final = check_view(time.monotonic(), 0, [], str(exc)[:300])
            final["acknowledged"] = workload.ledger.acknowledged
            log.info(
                "%d acknowledged writes, final read-back of %d keys lost %s",
                workload.ledger.acknowledged,
                final["checked"],
                len(final["lost"]) if final["error"] is None else f"? ({final['error']})",
            )
            self.final = final
            return final

    # ---------------------------------------------------------------------------- the API

    async def health(self, _request: Request) -> JSONResponse:
        w = self.workload
        return JSONResponse(
            {
                "ok": True,
                "warm": self.warm,
                "running": w.running,
                "rate": w.rate,
                "mix": w.mix,
                "in_flight": w.in_flight,
                "acknowledged": w.ledger.acknowledged,
            }
        )

    async def samples_after(self, request: Request) -> JSONResponse:
        after = int(request.query_params.get("after", "0"))
        samples = [{**s, "check": _aged(s["check"])} for s in self.samples if s["seq"] > after]
        return JSONResponse({"samples": samples})

    async def window(self, request: Request) -> JSONResponse:
        """The last `seconds` of requests (none from the warm-up), the ledger's last check."""
        seconds = float(request.query_params.get("seconds", "5"))
        span = min(seconds, time.monotonic() - self._warm_until)
        stats = self.workload.window(span).to_dict() if span > 0 else None
        return JSONResponse(
            {
                "window": stats,
                "acknowledged": self.workload.ledger.acknowledged,
                "check": _aged(self.check),
            }
        )

    async def ledger(self, _request: Request) -> JSONResponse:
        """Per key the latest acknowledged write: the ground truth the checks judge by."""
        snapshot = self.workload.ledger.snapshot()
        return JSONResponse(
            {
                "acknowledged": self.workload.ledger.acknowledged,
                "acks": {
                    key: {"kind": ack.kind, "revision": ack.revision, "value": ack.value}
                    for key, ack in sorted(snapshot.acks.items())
                },
            }
        )

    async def check_request(self, _request: Request) -> JSONResponse:
        return JSONResponse(_aged(await self.check_now()))

    async def traffic(self, request: Request) -> JSONResponse:
        try:
            body = await request.json()
            self.workload.adjust(dict(body))
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"rate": self.workload.rate, "mix": self.workload.mix})

    async def stop(self, _request: Request) -> JSONResponse:
        return JSONResponse(_aged(await self.finish()))

    def routes(self) -> list[Route]:
        return [
            Route("/api/health", self.health),
            Route("/api/samples", self.samples_after),
            Route("/api/window", self.window),
            Route("/api/ledger", self.ledger),
            Route("/api/check", self.check_request, methods=["POST"]),
            Route("/api/traffic", self.traffic, methods=["PUT"]),
            Route("/api/stop", self.stop, methods=["POST"]),
        ]


# -------------------------------------------------------------------------------- the argv


def clients_argv(
    *,
    host: str,
    port: int,
    endpoints: Mapping[str, str],
    rate: float,
    mix: Mapping[str, float] | None,
    keys: int,
    prefix: str,
    timeout_s: float,
    check_every_s: float,
    warm_up_s: float,
    tls: ClientTLS | None = None,
    auth_file: Path | None = None,
    seed: int | None = None,
) -> list[str]:
    """How the lab starts the clients: certificate paths may show, a password never does."""
    argv = [
        sys.executable, "-m", MODULE,
        "--host", host,
        "--port", str(port),
        "--endpoints", json.dumps(dict(endpoints)),
        "--rate", str(rate),
        "--keys", str(keys),
        "--prefix", prefix,
        "--timeout-s", str(timeout_s),
        "--check-every-s", str(check_every_s),
        "--warm-up-s", str(warm_up_s),
    ]  # fmt: skip
    if mix is not None:
        argv += ["--mix", json.dumps(dict(mix))]
    if tls is not None:
        for flag, value in (
            ("--ca-file", tls.ca_file),
            ("--cert-file", tls.cert_file),
            ("--key-file", tls.key_file),
        ):
            if value:
                argv += [flag, value]
    if auth_file is not None:
        argv += ["--auth-file", str(auth_file)]
    if seed is not None:
        argv += ["--seed", str(seed)]
    return argv


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"python -m {MODULE}",
        description="Drive etcd members as clients with a ledger of writes, behind an HTTP API.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--endpoints", required=True, help='JSON: {"member-1": "http://..."}')
    p.add_argument("--rate", type=float, default=40.0)
    p.add_argument("--mix", default=None, help='JSON: {"put": 0.5, "get": 0.4, "delete": 0.1}')
    p.add_argument("--keys", type=int, default=200)
    p.add_argument("--prefix", default="workload/")
    p.add_argument("--timeout-s", type=float, default=1.0)
    p.add_argument("--check-every-s", type=float, default=2.0)
    p.add_argument("--warm-up-s", type=float, default=2.0)
    p.add_argument("--ca-file")
    p.add_argument("--cert-file")
    p.add_argument("--key-file")
    p.add_argument("--auth-file", type=Path, help="a 0600 JSON file, deleted once read")
    p.add_argument("--seed", type=int, default=None)
    return p


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level="INFO", format="%(asctime)s %(levelname)s [clients] %(message)s"
    )
    username = password = None
    if args.auth_file is not None:
        username, password = read_auth_file(args.auth_file)
    tls = None
    if args.ca_file or args.cert_file:
        tls = ClientTLS(args.ca_file, args.cert_file, args.key_file)
    workload_args = {
        "endpoints": json.loads(args.endpoints),
        "rate": args.rate,
        "mix": json.loads(args.mix) if args.mix else None,
        "keys": args.keys,
        "prefix": args.prefix,
        "tls": tls,
        "username": username,
        "password": password,
        "timeout_s": args.timeout_s,
        "seed": args.seed,
    }
    service = ClientsService(
        workload_args, check_every_s=args.check_every_s, warm_up_s=args.warm_up_s
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
