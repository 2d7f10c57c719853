"""The fault proxy forwards faithfully, delays on demand and can cut a live link."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from operator_console.lab.proxy import FaultProxy
from operator_console.lab.ratelimiter.store import ValkeyStore
from operator_console.lab.supervisor import Supervisor


def redis_client(port: int) -> aioredis.Redis:
    """A client that fails fast instead of retrying with backoff."""
    return aioredis.Redis(
        port=port, socket_timeout=1, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0)
    )


class EchoServer:
    """Echoes everything back; counts connections the other side ended (EOF or reset)."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.port = 0
        self.ended = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            self.ended += 1
        except ConnectionError:
            self.ended += 1
        finally:
            writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in self.writers:
            w.close()


@pytest.fixture
async def echo() -> AsyncIterator[EchoServer]:
    server = EchoServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def proxy(echo: EchoServer) -> AsyncIterator[FaultProxy]:
    p = FaultProxy("127.0.0.1", 0, "127.0.0.1", echo.port)
    await p.start()
    yield p
    await p.stop()


async def roundtrip(port: int, payload: bytes) -> tuple[bytes, float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    writer.write(payload)
    await writer.drain()
    got = await reader.readexactly(len(payload))
    elapsed = time.monotonic() - started
    writer.close()
    return got, elapsed


async def test_forwards_bytes_both_ways_and_counts_them(proxy: FaultProxy):
    assert proxy.port != 0
    payload = os.urandom(2 * 1024 * 1024)
    got, _ = await roundtrip(proxy.port, payload)
    assert got == payload
    state = proxy.state
    assert state["bytes_up"] == len(payload)
    assert state["bytes_down"] == len(payload)
    assert state["accepted"] == 1


async def test_latency_delays_each_direction_and_keeps_order(proxy: FaultProxy):
    proxy.set_latency(150)
    assert proxy.state["latency_ms"] == 150
    _, elapsed = await roundtrip(proxy.port, b"ping")
    assert elapsed >= 0.29  # 150 ms up + 150 ms down

    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    expected = b""
    for i in range(50):
        piece = f"<{i}>".encode()
        expected += piece
        writer.write(piece)
        await writer.drain()
        await asyncio.sleep(0.002)
        if i == 25:
            proxy.set_latency(0)  # a lowered latency must not let later chunks overtake
    got = await asyncio.wait_for(reader.readexactly(len(expected)), 5)
    assert got == expected
    writer.close()

    proxy.restore()
    assert proxy.state["latency_ms"] == 0


async def test_negative_latency_is_rejected(proxy: FaultProxy):
    with pytest.raises(ValueError, match="latency"):
        proxy.set_latency(-1)


async def test_upstream_closing_closes_the_client(proxy: FaultProxy, echo: EchoServer):
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"x")
    assert await reader.readexactly(1) == b"x"
    for w in echo.writers:
        w.close()
    assert await asyncio.wait_for(reader.read(), 3) == b""
    writer.close()
    await asyncio.sleep(0.1)
    assert proxy.state["connections"] == 0


async def test_client_closing_closes_the_upstream(proxy: FaultProxy, echo: EchoServer):
    _, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"hello")
    await writer.drain()
    writer.close()
    for _ in range(60):
        if echo.ended == 1:
            break
        await asyncio.sleep(0.05)
    assert echo.ended == 1
    assert proxy.state["connections"] == 0


async def test_unreachable_upstream_closes_the_client_at_once(unused_tcp_port: int):
    p = FaultProxy("127.0.0.1", 0, "127.0.0.1", unused_tcp_port)
    await p.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        data = await asyncio.wait_for(reader.read(), 3)
        assert data == b""
        writer.close()
    except ConnectionError:
        pass
    finally:
        await p.stop()


async def test_stop_leaves_no_tasks_behind(echo: EchoServer):
    p = FaultProxy("127.0.0.1", 0, "127.0.0.1", echo.port)
    await p.start()
    p.set_latency(50)
    conns = [await asyncio.open_connection("127.0.0.1", p.port) for _ in range(5)]
    for _, w in conns:
        w.write(b"data")
    await asyncio.sleep(0.1)
    assert p.state["connections"] == 5
    assert p.pending_tasks() >= 5
    await p.stop()
    assert p.pending_tasks() == 0
    assert not p.running
    for reader, w in conns:
        await asyncio.wait_for(reader.read(), 2)  # reaches EOF: dropped, not left hanging
        w.close()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", p.port)
    await p.stop()  # stopping twice is harmless


@pytest.fixture
async def valkey(tmp_path: Path) -> AsyncIterator[ValkeyStore]:
    sup = Supervisor(tmp_path)
    store = ValkeyStore(sup, tmp_path)
    await store.start()
    yield store
    await sup.stop_all()


async def test_cut_breaks_a_live_redis_connection_and_restore_heals(valkey: ValkeyStore):
    p = FaultProxy("127.0.0.1", 0, "127.0.0.1", valkey.port)
    await p.start()
    client = redis_client(p.port)
    try:
        assert await client.set("k", "v")
        assert await client.get("k") == b"v"
        assert p.state["connections"] == 1

        p.cut()
        assert p.state["cut"] is True
        assert p.state["connections"] == 0
        with pytest.raises((RedisConnectionError, RedisTimeoutError)):
            await client.get("k")
        fresh = redis_client(p.port)
        with pytest.raises((RedisConnectionError, RedisTimeoutError)):
            await fresh.ping()
        await fresh.aclose()

        p.restore()
        assert p.state["cut"] is False
        healed = redis_client(p.port)
        assert await healed.get("k") == b"v"
        await healed.aclose()
    finally:
        await client.aclose()
        await p.stop()


async def test_proxy_forwards_while_the_callers_loop_is_blocked(valkey: ValkeyStore):
    """The proxy's timing must not depend on how busy the console's own loop is."""
    p = FaultProxy("127.0.0.1", 0, "127.0.0.1", valkey.port)
    await p.start()
    p.set_latency(20)
    try:
        # A blocking client blocks this loop; only a proxy on its own loop can answer it.
        client = redis.Redis(port=p.port, socket_timeout=2, socket_connect_timeout=2)
        started = time.monotonic()
        assert client.ping() is True
        assert time.monotonic() - started >= 0.04  # 20 ms each way
        client.close()
    finally:
        await p.stop()


class Callers:
    """Names connections by their source port, the way a real identify hook names a dialler."""

    def __init__(self) -> None:
        self.names: dict[int, str] = {}

    async def identify(self, peer: tuple[object, ...], _head: bytes) -> str | None:
        port = peer[1]
        assert isinstance(port, int)
        return self.names.get(port)

    async def connect(
        self, name: str | None, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Connect from a bound source port, named before the proxy can ask."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        if name is not None:
            self.names[sock.getsockname()[1]] = name
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        return await asyncio.open_connection(sock=sock)


@pytest.fixture
async def named_proxy(echo: EchoServer) -> AsyncIterator[tuple[FaultProxy, Callers]]:
    callers = Callers()
    p = FaultProxy("127.0.0.1", 0, "127.0.0.1", echo.port, identify=callers.identify)
    await p.start()
    yield p, callers
    await p.stop()


async def echoes(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> float:
    started = time.monotonic()
    writer.write(b"ping")
    await writer.drain()
    assert await asyncio.wait_for(reader.readexactly(4), 3) == b"ping"
    return time.monotonic() - started


async def test_cutting_one_source_drops_only_its_connections(
    named_proxy: tuple[FaultProxy, Callers],
):
    proxy, callers = named_proxy
    a = await callers.connect("a", proxy.port)
    b = await callers.connect("b", proxy.port)
    stranger = await callers.connect(None, proxy.port)
    for conn in (a, b, stranger):
        await echoes(*conn)
    assert proxy.state["sources"] == {"a": 1, "b": 1, "unknown": 1}

    proxy.cut_source("a")
    assert await asyncio.wait_for(a[0].read(), 3) == b""  # the open connection dropped
    await echoes(*b)
    await echoes(*stranger)
    again = await callers.connect("a", proxy.port)
    assert await asyncio.wait_for(again[0].read(), 3) == b""  # and new ones are refused
    assert proxy.state["refused"] == {"a": 1}
    assert proxy.state["cut_sources"] == ["a"]

    proxy.uncut_source("a")
    await echoes(*await callers.connect("a", proxy.port))
    proxy.cut()
    refused = await callers.connect("b", proxy.port)
    assert await asyncio.wait_for(refused[0].read(), 3) == b""
    assert proxy.state["refused"] == {"a": 1, "b": 1}  # counted by who was refused
    proxy.uncut()
    await echoes(*await callers.connect("b", proxy.port))
    for _, writer in (a, b, stranger, again, refused):
        writer.close()


async def test_latency_for_one_source_adds_to_the_links_own(
    named_proxy: tuple[FaultProxy, Callers],
):
    proxy, callers = named_proxy
    slow = await callers.connect("slow", proxy.port)
    fast = await callers.connect("fast", proxy.port)
    proxy.set_source_latency("slow", 100)
    assert await echoes(*slow) >= 0.19  # 100 ms each way
    assert await echoes(*fast) < 0.1
    proxy.set_latency(50)
    assert proxy.latency_for("slow") == 150 and proxy.latency_for("fast") == 50
    assert proxy.latency_for(None) == 50
    assert await echoes(*slow) >= 0.29
    proxy.restore()
    assert proxy.state["source_latency_ms"] == {} and proxy.latency_for("slow") == 0
    assert await echoes(*slow) < 0.1
    with pytest.raises(ValueError, match="latency"):
        proxy.set_source_latency("slow", -5)
    for _, writer in (slow, fast):
        writer.close()


async def test_a_failing_identify_hook_leaves_the_connection_unattributed(echo: EchoServer):
    async def broken(_peer: tuple[object, ...], _head: bytes) -> str | None:
        raise RuntimeError("no idea")

    p = FaultProxy("127.0.0.1", 0, "127.0.0.1", echo.port, identify=broken)
    await p.start()
    try:
        got, _ = await roundtrip(p.port, b"still forwarded")
        assert got == b"still forwarded"
        assert p.state["accepted"] == 1
    finally:
        await p.stop()


async def test_identify_sees_the_first_bytes_and_they_still_reach_upstream(echo: EchoServer):
    seen: list[bytes] = []

    async def by_greeting(_peer: tuple[object, ...], head: bytes) -> str | None:
        seen.append(head)
        return head.split(b" ", 1)[0].decode() or None

    p = FaultProxy("127.0.0.1", 0, "127.0.0.1", echo.port, identify=by_greeting, head_bytes=1024)
    await p.start()
    try:
        p.cut_source("mallory")
        got, _ = await roundtrip(p.port, b"alice says hello")
        assert got == b"alice says hello"
        assert seen == [b"alice says hello"]
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        writer.write(b"mallory says hello")
        assert await asyncio.wait_for(reader.read(), 3) == b""
        writer.close()
        assert p.state["refused"] == {"mallory": 1}
        assert p.state["bytes_up"] == len(b"alice says hello")
    finally:
        await p.stop()
