"""What a subject may do to the processes it runs on, wherever they run: the children of a local
lab, or the containers of a compose stack. Subjects act through this protocol only, so a
`restart_member` or a `member_kill` fault is the same code for both.

Names are the subject's own target names (`member-1`, `node-2`, `tikv-3`): a compose stack
names its services the same way, and the local lab its processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

# running, paused, killed (SIGKILL or OOM), exited (any other end), stopped (never started or
# stopped on purpose); None from `status` means "not known" (no such process, engine silent).
ProcessState = Literal["running", "paused", "killed", "exited", "stopped"]
DEAD: tuple[str, ...] = ("killed", "exited", "stopped")


class ProcessControlError(RuntimeError):
    """A process could not be found or acted on; the message is one line naming it and why."""


class ProcessBackend(Protocol):
    """The subject's processes, by name: their state, signals, restarts and logs."""

    @property
    def kind(self) -> str:
        """'process' for local children, 'container' for a compose stack (for texts)."""
        ...

    def names(self) -> Sequence[str]:
        """The processes known now (a container stack: as of the last refresh)."""
        ...

    def status(self, name: str) -> str | None:
        """The last known state (a `ProcessState`); None when unknown."""
        ...

    def ident(self, name: str) -> str | None:
        """How a person finds it: 'pid 4242' or 'container 3f2a1b9c0d11'."""
        ...

    def about(self) -> str:
        """One line: where these processes run."""
        ...

    async def refresh(self) -> None:
        """Read every state again (one call for a whole container stack); never raises."""
        ...

    async def kill(self, name: str) -> None:
        """SIGKILL: no goodbye to its peers; its data stays."""
        ...

    async def pause(self, name: str) -> None:
        """Freeze it (SIGSTOP, or the cgroup freezer for a container)."""
        ...

    async def resume(self, name: str) -> None: ...

    async def stop(self, name: str) -> None:
        """SIGTERM, then SIGKILL after a grace period."""
        ...

    async def start(self, name: str) -> None:
        """Start a process that is not running, on its own data and ports."""
        ...

    async def restart(self, name: str) -> None:
        """Stop it if it runs, then start it; returns once it was started again."""
        ...

    async def logs(self, name: str, lines: int) -> tuple[str, str]:
        """Where its log is (a path or 'docker logs <container>') and its last lines."""
        ...


__all__ = ["DEAD", "ProcessBackend", "ProcessControlError", "ProcessState"]
