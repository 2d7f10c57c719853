"""Textual messages carrying bus events from the runtime to the widgets."""

from __future__ import annotations

from textual.message import Message

from operator_console.domain.events import Event, Observed


class BusEvent(Message):
    """One event from the runtime's bus, delivered to the dashboard."""

    def __init__(self, event: Event) -> None:
        super().__init__()
        self.event = event


class ObservationUpdate(Message):
    """The newest observation; an older one still queued is replaced (only the latest matters)."""

    def __init__(self, event: Observed) -> None:
        super().__init__()
        self.event = event

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, ObservationUpdate)
