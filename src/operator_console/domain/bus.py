"""The in-process event bus every component publishes to; the TUI and headless runner subscribe."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

from operator_console.domain.events import Event
from operator_console.domain.model import utcnow

log = logging.getLogger(__name__)


Listener = Callable[[Event], None]
E = TypeVar("E", bound=Event)


class EventBus:
    """Fan-out of events to listeners (synchronous) and subscribers (async queues).

    `publish` may be called from any thread; delivery always happens on the bus's loop.
    """

    def __init__(self, *, queue_size: int = 10_000) -> None:
        self._started = time.monotonic()
        self._listeners: list[Listener] = []
        self._queues: list[asyncio.Queue[Event]] = []
        self._queue_size = queue_size
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def started_monotonic(self) -> float:
        return self._started

    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def reset_clock(self) -> None:
        """Restart `t` at zero (a run starts)."""
        self._started = time.monotonic()

    def bind_loop(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return remove

    def publish(self, event: E) -> E:
        """Stamp the event with the run's clock and deliver it; returns the stamped event."""
        event = dataclasses.replace(event, t=self.elapsed(), at=utcnow())
        loop = self._loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is not None and running is not loop and not loop.is_closed():
            loop.call_soon_threadsafe(self._deliver, event)
        else:
            self._deliver(event)
        return event

    def _deliver(self, event: Event) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # a broken view must not stop the loop that publishes
                log.exception("event listener failed on %s", event.name)
        for queue in list(self._queues):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                log.warning("subscriber queue full; dropping %s", event.name)

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[Event]]:
        queue: asyncio.Queue[Event] = asyncio.Queue(self._queue_size)
        self._queues.append(queue)
        try:
            yield queue
        finally:
            self._queues.remove(queue)
