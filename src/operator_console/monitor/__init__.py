"""The monitor loop: observe, check invariants, keep tickets."""

from operator_console.monitor.loop import Monitor, TickResult

__all__ = ["Monitor", "TickResult"]
