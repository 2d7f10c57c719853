"""Faults a node can be told to exhibit, each one a real change in how the node behaves."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)

FAILPOINT_NAMES = ("clock_skew_ms", "config_refresh_stuck")


class UnknownFailpoint(KeyError):
    """Raised for a failpoint name this node does not have."""


class Failpoints:
    """The node's failpoints; every change is logged so a fault is never silent in the log."""

    def __init__(self, node: str) -> None:
        self._node = node
        self.clock_skew_ms = 0
        self.config_refresh_stuck = False
        self._unstuck = asyncio.Event()
        self._unstuck.set()

    def to_dict(self) -> dict[str, Any]:
        return {
            "clock_skew_ms": self.clock_skew_ms,
            "config_refresh_stuck": self.config_refresh_stuck,
        }

    def active(self, name: str) -> bool:
        """Whether the failpoint differs from its default."""
        return bool(getattr(self, name))

    def set(self, name: str, value: Any) -> None:
        """Set one failpoint; raises UnknownFailpoint or ValueError for a bad name or value."""
        if name == "clock_skew_ms":
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError("clock_skew_ms takes an integer number of milliseconds")
            self.clock_skew_ms = value
        elif name == "config_refresh_stuck":
            if not isinstance(value, bool):
                raise ValueError("config_refresh_stuck takes true or false")
            self._set_stuck(value)
        else:
            raise UnknownFailpoint(name)
        log.warning("node %s: failpoint %s set to %r", self._node, name, value)

    def clear(self, name: str) -> None:
        """Put one failpoint back to its default; raises UnknownFailpoint for a bad name."""
        if name == "clock_skew_ms":
            self.clock_skew_ms = 0
        elif name == "config_refresh_stuck":
            self._set_stuck(False)
        else:
            raise UnknownFailpoint(name)
        log.warning("node %s: failpoint %s cleared", self._node, name)

    def _set_stuck(self, stuck: bool) -> None:
        self.config_refresh_stuck = stuck
        if stuck:
            self._unstuck.clear()
        else:
            self._unstuck.set()

    async def wait_until_refresh_unstuck(self) -> None:
        """Hang while `config_refresh_stuck` is on, the way a wedged refresher would."""
        await self._unstuck.wait()
