"""A lab's fault proxies in a process of their own, steered over a small HTTP API.

    python -m operator_console.lab.proxy_host --port P --links '{"a": [LISTEN, "host:port"]}'

Every byte between a lab's processes that a fault may slow or cut passes through a proxy; in the
console's own process they would share its CPU with the screen. Here they run apart, so a slow
link is as slow as asked and the console only draws.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from operator_console.lab.ports import free_ports
from operator_console.lab.proxy import FaultProxy
from operator_console.lab.supervisor import Supervisor

MODULE = "operator_console.lab.proxy_host"
HOST = "127.0.0.1"
_TIMEOUT_S = 3.0
_START_TIMEOUT_S = 20.0


class ProxyHostError(RuntimeError):
    """The proxy process could not be reached or refused a change."""


# ------------------------------------------------------------------- the process


class _Service:
    def __init__(self, links: Mapping[str, tuple[int, str]]) -> None:
        self.proxies: dict[str, FaultProxy] = {}
        for name, (listen, upstream) in links.items():
            host, _, port = upstream.rpartition(":")
            self.proxies[name] = FaultProxy(HOST, int(listen), host, int(port))

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        await asyncio.gather(*(p.start() for p in self.proxies.values()))
        try:
            yield
        finally:
            await asyncio.gather(*(p.stop() for p in self.proxies.values()))

    def _proxy(self, request: Request) -> FaultProxy:
        return self.proxies[request.path_params["name"]]

    async def states(self, _request: Request) -> JSONResponse:
        return JSONResponse({name: p.state for name, p in self.proxies.items()})

    async def change(self, request: Request) -> JSONResponse:
        name = request.path_params["name"]
        if name not in self.proxies:
            return JSONResponse({"error": f"no link {name!r}"}, status_code=404)
        proxy = self.proxies[name]
        body = await request.json()
        try:
            if body.get("restore"):
                proxy.restore()
            if "latency_ms" in body:
                proxy.set_latency(float(body["latency_ms"]))
            if body.get("cut"):
                await asyncio.to_thread(proxy.cut)
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(proxy.state)

    def routes(self) -> list[Route]:
        return [
            Route("/api/links", self.states),
            Route("/api/links/{name}", self.change, methods=["PUT"]),
        ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--links", required=True, help='JSON: {"name": [listen_port, "host:port"]}')
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level="INFO", format="%(asctime)s %(levelname)s [links] %(message)s"
    )
    links = {name: (int(pair[0]), str(pair[1])) for name, pair in json.loads(args.links).items()}
    service = _Service(links)
    app = Starlette(routes=service.routes(), lifespan=service.lifespan)

    import uvicorn

    uvicorn.run(
        app,
        host=HOST,
        port=args.port,
        loop="asyncio",
        workers=1,
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=3,
    )


# --------------------------------------------------------------- the lab's handle


class Link:
    """One proxied link, steered through the proxy process."""

    def __init__(self, host: ProxyHost, name: str, port: int) -> None:
        self._host = host
        self.name = name
        self.port = port

    async def set_latency(self, ms: float) -> dict[str, Any]:
        if ms < 0:
            raise ValueError(f"latency must be >= 0 ms, got {ms}")
        return await self._host.change(self.name, {"latency_ms": ms})

    async def cut(self) -> dict[str, Any]:
        return await self._host.change(self.name, {"cut": True})

    async def restore(self) -> dict[str, Any]:
        return await self._host.change(self.name, {"restore": True})

    async def state(self) -> dict[str, Any]:
        states = await self._host.states()
        return dict(states[self.name])


class ProxyHost:
    """Starts the proxy process under a lab's supervisor and hands out one `Link` per name."""

    def __init__(self, supervisor: Supervisor, name: str = "links") -> None:
        self.supervisor = supervisor
        self.name = name
        self.links: dict[str, Link] = {}
        self._url: str | None = None
        self._http: httpx.AsyncClient | None = None

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None or self._http.is_closed:
            self._http = httpx.AsyncClient(timeout=_TIMEOUT_S, trust_env=False)
        return self._http

    async def start(self, upstreams: Mapping[str, str]) -> dict[str, Link]:
        """One link per name, each forwarding to its `host:port`; returns them by name."""
        ports = free_ports(len(upstreams) + 1, HOST)
        api, listen = ports[0], ports[1:]
        pairs = zip(upstreams.items(), listen, strict=True)
        config: dict[str, tuple[int, str]] = {name: (port, up) for (name, up), port in pairs}
        url = f"http://{HOST}:{api}"

        async def answers() -> bool:
            try:
                response = await self.http.get(f"{url}/api/links", timeout=0.5)
            except httpx.HTTPError:
                return False
            return response.status_code == 200

        argv = [sys.executable, "-m", MODULE, "--port", str(api), "--links", json.dumps(config)]
        await self.supervisor.start(self.name, argv, ready=answers, timeout=_START_TIMEOUT_S)
        self._url = url
        self.links = {name: Link(self, name, port) for name, (port, _) in config.items()}
        return dict(self.links)

    async def stop(self) -> None:
        if self.name in self.supervisor.names():
            await self.supervisor.stop(self.name)
        self._url = None
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        if self._url is None:
            raise ProxyHostError("the link proxies are not running")
        try:
            response = await self.http.request(method, f"{self._url}{path}", **kwargs)
        except httpx.HTTPError as exc:
            raise ProxyHostError(f"the link proxies at {self._url}: {exc!r}") from exc
        if response.status_code >= 400:
            raise ProxyHostError(f"{method} {path}: HTTP {response.status_code} {response.text}")
        return response.json()

    async def states(self) -> dict[str, dict[str, Any]]:
        data: dict[str, dict[str, Any]] = await self._request("GET", "/api/links")
        return data

    async def change(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        data: dict[str, Any] = await self._request("PUT", f"/api/links/{name}", json=body)
        return data


if __name__ == "__main__":
    main()
