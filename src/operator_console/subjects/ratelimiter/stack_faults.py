"""The rate limiter's faults that a process backend (a compose stack's containers) can do: a
node killed or paused, the store paused; each through the backend, cleared by starting or
resuming what it stopped."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from operator_console.contract import ProcessBackend
from operator_console.lab.processes import ProcessFault
from operator_console.subjects.ratelimiter.backend import STORE_PROCESS

# kind -> (how, whether it targets the store)
_KINDS: dict[str, tuple[str, bool]] = {
    "node_kill": ("kill", False),
    "node_pause": ("pause", False),
    "store_pause": ("pause", True),
}
STACK_FAULT_KINDS: tuple[str, ...] = tuple(_KINDS)


def stack_fault(
    processes: ProcessBackend,
    nodes: Sequence[str],
    kind: str,
    target: str | None,
    params: Mapping[str, Any],
) -> ProcessFault:
    """One fault through the backend; ValueError names what is possible here."""
    if kind not in _KINDS:
        raise ValueError(
            f"fault {kind!r} cannot be done on this stack's {processes.kind}s (possible: "
            f"{', '.join(STACK_FAULT_KINDS)}; link faults and failpoints need the local lab)"
        )
    if params:
        raise ValueError(f"fault {kind!r} takes no parameters here (given: {', '.join(params)})")
    how, store = _KINDS[kind]
    valid = [STORE_PROCESS] if store else list(nodes)
    chosen = target or (valid[1] if len(valid) > 1 else valid[0])
    if chosen not in valid:
        raise ValueError(f"fault {kind!r} cannot target {chosen!r} (valid: {', '.join(valid)})")
    return ProcessFault(processes, kind, chosen, how)
