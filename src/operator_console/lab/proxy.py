"""A TCP proxy on one link, so that link alone can be slowed or cut.

With an `identify` hook the proxy also learns who dialled each connection (from its peer
address and, with `head_bytes`, the first bytes it sent), so faults can apply to one caller's
connections only (a peer's traffic to a member, not everyone's).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from typing import Any

_CHUNK = 64 * 1024
_MAX_QUEUED = 4 * 1024 * 1024  # bytes held back by latency before the reader pauses
_CONNECT_TIMEOUT_S = 5.0
_IDENTIFY_TIMEOUT_S = 2.0
# A client that waits for the server to speak first gives no head; do not wait long for one.
_HEAD_TIMEOUT_S = 0.5
UNKNOWN_SOURCE = "unknown"

# Given a connection's peer address and first bytes, name whoever dialled it (None: unknown).
Identify = Callable[[tuple[Any, ...], bytes], Awaitable[str | None]]


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        loop.close()


class _DelayedWriter:
    """Writes chunks to one side after a delay, in the order they were read."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._loop = asyncio.get_running_loop()
        self._queue: deque[tuple[float, bytes]] = deque()
        self._queued_bytes = 0
        self._last_at = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._empty = asyncio.Event()
        self._empty.set()

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    def send(self, data: bytes, delay_s: float) -> None:
        if delay_s <= 0 and not self._queue:
            self._writer.write(data)
            return
        # Never deliver before an earlier chunk, even if the latency was lowered meanwhile.
        at = max(self._loop.time() + delay_s, self._last_at)
        self._last_at = at
        self._queue.append((at, data))
        self._queued_bytes += len(data)
        self._empty.clear()
        if self._timer is None:
            self._timer = self._loop.call_at(at, self._flush)

    def _flush(self) -> None:
        self._timer = None
        now = self._loop.time()
        while self._queue and self._queue[0][0] <= now:
            _, data = self._queue.popleft()
            self._queued_bytes -= len(data)
            if not self._writer.is_closing():
                self._writer.write(data)
        if self._queue:
            self._timer = self._loop.call_at(self._queue[0][0], self._flush)
        else:
            self._empty.set()

    async def wait_empty(self) -> None:
        await self._empty.wait()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._queue.clear()
        self._queued_bytes = 0
        self._empty.set()


class _Link:
    """One proxied connection: a pump task for each direction."""

    def __init__(
        self,
        proxy: FaultProxy,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        source: str | None = None,
    ) -> None:
        self.proxy = proxy
        self.source = source
        self.client_reader, self.client_writer = client
        self.up_reader, self.up_writer = upstream
        self._delayed: list[_DelayedWriter] = []

    async def run(self) -> None:
        """Pump both ways until either side closes, then close the other."""
        up = asyncio.create_task(self._pump(self.client_reader, self.up_writer, "up"))
        down = asyncio.create_task(self._pump(self.up_reader, self.client_writer, "down"))
        try:
            await asyncio.wait((up, down), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (up, down):
                task.cancel()
            await asyncio.gather(up, down, return_exceptions=True)
            self.close()

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, direction: str
    ) -> None:
        delayed = _DelayedWriter(writer)
        self._delayed.append(delayed)
        try:
            while True:
                data = await reader.read(_CHUNK)
                if not data:
                    break
                self.proxy._count(direction, len(data))
                delayed.send(data, self.proxy.latency_for(self.source) / 1000.0)
                if delayed.queued_bytes > _MAX_QUEUED:
                    await delayed.wait_empty()
                await writer.drain()
            # The sender is done; what it already sent still arrives, late if need be.
            await delayed.wait_empty()
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            delayed.cancel()

    def close(self) -> None:
        for delayed in self._delayed:
            delayed.cancel()
        for writer in (self.client_writer, self.up_writer):
            if not writer.is_closing():
                writer.close()

    def abort(self) -> None:
        """Drop both sides at once, as a broken network would."""
        for delayed in self._delayed:
            delayed.cancel()
        for writer in (self.client_writer, self.up_writer):
            writer.transport.abort()


class FaultProxy:
    """Forwards TCP from a listen port to an upstream, with switchable latency and cut.

    The proxy serves from its own thread and event loop, so the delay it adds is the one
    asked for, not whatever backlog the caller's busy event loop happens to have. When
    `identify` is given, each connection is attributed to a source as it arrives, and
    cuts and latency can also be set for one source's connections alone.
    """

    def __init__(
        self,
        listen_host: str,
        listen_port: int,
        upstream_host: str,
        upstream_port: int,
        *,
        identify: Identify | None = None,
        head_bytes: int = 0,
    ) -> None:
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self._links: set[_Link] = set()
        self._latency_ms = 0.0
        self._cut = False
        self._accepted = 0
        self._bytes_up = 0
        self._bytes_down = 0
        self._identify = identify
        self._head_bytes = head_bytes
        self._cut_sources: set[str] = set()
        self._source_latency: dict[str, float] = {}
        self._refused: Counter[str] = Counter()

    # -------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Start listening on the proxy's own thread; returns once the port is bound."""
        if self._thread is not None:
            return
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=_run_loop, args=(loop,), name="fault-proxy", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._listen(), loop))
        except BaseException:
            await self._halt_thread()
            raise

    async def stop(self) -> None:
        """Stop listening, drop every connection, end every task and the proxy's thread."""
        loop = self._loop
        if loop is None or self._thread is None:
            return
        try:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._shutdown(), loop))
        finally:
            await self._halt_thread()

    async def _halt_thread(self) -> None:
        loop, thread = self._loop, self._thread
        self._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        await asyncio.to_thread(thread.join, 5.0)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.listen_host, self.listen_port)
        self.listen_port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        self._drop_links()
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        if server is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await server.wait_closed()

    def pending_tasks(self) -> int:
        """Tasks still unfinished on the proxy's loop (zero once stop() returned)."""
        if self._loop is None:
            return 0
        return sum(1 for t in asyncio.all_tasks(self._loop) if not t.done())

    @property
    def port(self) -> int:
        return self.listen_port

    @property
    def running(self) -> bool:
        return self._thread is not None and self._server is not None

    # ----------------------------------------------------------------- faults

    @property
    def latency_ms(self) -> float:
        return self._latency_ms

    @property
    def is_cut(self) -> bool:
        return self._cut

    def set_latency(self, ms: float) -> None:
        """Delay every chunk, both ways, by `ms` milliseconds."""
        if ms < 0:
            raise ValueError(f"latency must be >= 0 ms, got {ms}")
        self._latency_ms = float(ms)

    def cut(self) -> None:
        """Drop every open connection and close new ones as soon as they arrive."""
        self._cut = True
        self._on_proxy_loop(self._drop_links)

    def _drop_links(self, source: str | None = None) -> None:
        """Abort every open connection, or only those attributed to `source`."""
        if source is None:
            links, self._links = self._links, set()
        else:
            links = {link for link in self._links if link.source == source}
            self._links -= links
        for link in links:
            link.abort()

    def _on_proxy_loop(self, fn: Callable[[], None]) -> None:
        """Run `fn` on the proxy's loop and wait until it has run."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            fn()
            return
        if threading.current_thread() is thread:
            fn()
            return
        done: concurrent.futures.Future[None] = concurrent.futures.Future()

        def call() -> None:
            try:
                fn()
            except BaseException as exc:
                done.set_exception(exc)
            else:
                done.set_result(None)

        loop.call_soon_threadsafe(call)
        done.result(timeout=5.0)

    def uncut(self) -> None:
        """Accept connections again; latency settings stay as they are."""
        self._cut = False

    def cut_source(self, source: str) -> None:
        """Drop `source`'s open connections and refuse its new ones; others pass."""
        self._cut_sources.add(source)
        self._on_proxy_loop(lambda: self._drop_links(source))

    def uncut_source(self, source: str) -> None:
        self._cut_sources.discard(source)

    def set_source_latency(self, source: str, ms: float) -> None:
        """Delay every chunk of `source`'s connections, both ways, by `ms` more milliseconds."""
        if ms < 0:
            raise ValueError(f"latency must be >= 0 ms, got {ms}")
        if ms == 0:
            self._source_latency.pop(source, None)
        else:
            self._source_latency[source] = float(ms)

    def latency_for(self, source: str | None) -> float:
        """The delay in ms a connection from `source` gets: the link's plus the source's own."""
        extra = self._source_latency.get(source, 0.0) if source is not None else 0.0
        return self._latency_ms + extra

    def _refuses(self, source: str | None) -> bool:
        return (
            self._cut
            or self._server is None
            or (source is not None and source in self._cut_sources)
        )

    def restore(self) -> None:
        """Back to a clean link: no latency, connections accepted again, from every source."""
        self._latency_ms = 0.0
        self._cut = False
        self._cut_sources.clear()
        self._source_latency.clear()

    @property
    def state(self) -> dict[str, Any]:
        return {
            "latency_ms": self._latency_ms,
            "cut": self._cut,
            "connections": len(self._links),
            "accepted": self._accepted,
            "bytes_up": self._bytes_up,
            "bytes_down": self._bytes_down,
            "cut_sources": sorted(self._cut_sources),
            "source_latency_ms": dict(self._source_latency),
            "sources": dict(Counter(link.source or UNKNOWN_SOURCE for link in self._links)),
            "refused": dict(self._refused),
        }

    # -------------------------------------------------------------- internals

    def _count(self, direction: str, n: int) -> None:
        if direction == "up":
            self._bytes_up += n
        else:
            self._bytes_down += n

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:
            # Only stop() cancels these; ending quietly keeps asyncio's stream callback
            # (which calls task.exception()) from logging a spurious error on 3.11.
            writer.transport.abort()
        finally:
            if task is not None:
                self._handlers.discard(task)

    async def _source_of(self, writer: asyncio.StreamWriter, head: bytes) -> str | None:
        if self._identify is None:
            return None
        try:
            async with asyncio.timeout(_IDENTIFY_TIMEOUT_S):
                return await self._identify(writer.get_extra_info("peername"), head)
        except Exception:
            return None

    async def _read_head(self, reader: asyncio.StreamReader) -> bytes:
        try:
            async with asyncio.timeout(_HEAD_TIMEOUT_S):
                return await reader.read(self._head_bytes)
        except (TimeoutError, OSError):
            return b""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = b""
        if self._identify is not None and self._head_bytes > 0:
            head = await self._read_head(reader)
            if not head and reader.at_eof():
                writer.transport.abort()
                return
        # Attribute first even when cut, so refusals are counted per source.
        source = await self._source_of(writer, head)
        if self._refuses(source):
            self._refused[source or UNKNOWN_SOURCE] += 1
            writer.transport.abort()
            return
        self._accepted += 1
        try:
            async with asyncio.timeout(_CONNECT_TIMEOUT_S):
                upstream = await asyncio.open_connection(self.upstream_host, self.upstream_port)
        except (OSError, TimeoutError):
            writer.transport.abort()
            return
        if self._refuses(source):
            self._refused[source or UNKNOWN_SOURCE] += 1
            writer.transport.abort()
            upstream[1].transport.abort()
            return
        link = _Link(self, (reader, writer), upstream, source)
        self._links.add(link)
        try:
            if head:
                delay_s = self.latency_for(source) / 1000.0
                if delay_s > 0:
                    await asyncio.sleep(delay_s)
                self._count("up", len(head))
                upstream[1].write(head)
            await link.run()
        finally:
            self._links.discard(link)
