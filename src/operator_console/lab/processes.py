"""The local lab's children as a `ProcessBackend`: the same protocol a compose stack's containers
implement, so a subject's restart action or kill fault does not care where its processes run."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from operator_console.contract.processes import DEAD, ProcessBackend, ProcessControlError
from operator_console.lab.supervisor import Supervisor, SupervisorError, UnknownProcessError

Restart = Callable[[str], Awaitable[None]]


class SupervisedProcesses:
    """Processes a `Supervisor` started, by the subject's names; `restart` is the lab's own way
    to start one again (its argv, its readiness check), so a restart returns once it answers."""

    kind = "process"

    def __init__(
        self,
        supervisor: Supervisor,
        names: Sequence[str] | Callable[[], Sequence[str]],
        restart: Restart,
        *,
        aliases: dict[str, str] | None = None,
    ) -> None:
        self._supervisor = supervisor
        self._names = names
        self._restart = restart
        self._aliases = dict(aliases or {})  # the subject's name -> the supervisor's

    def _proc(self, name: str) -> str:
        if name not in self.names():
            raise ProcessControlError(
                f"no process {name!r} in this lab (processes: {', '.join(self.names())})"
            )
        return self._aliases.get(name, name)

    def names(self) -> list[str]:
        names = self._names() if callable(self._names) else self._names
        return list(names)

    def status(self, name: str) -> str | None:
        try:
            return self._supervisor.status(self._proc(name))
        except UnknownProcessError:
            return "stopped"
        except ProcessControlError:
            return None

    def ident(self, name: str) -> str | None:
        try:
            proc = self._supervisor.get(self._proc(name))
        except (ProcessControlError, UnknownProcessError):
            return None
        return f"pid {proc.pid}" if proc.alive else None

    def about(self) -> str:
        return f"local processes the console started (logs in {self._supervisor.log_dir})"

    async def refresh(self) -> None:
        return None  # the supervisor polls its children itself

    def _signal(self, name: str, act: Callable[[str], None]) -> None:
        try:
            act(self._proc(name))
        except SupervisorError as exc:
            raise ProcessControlError(f"{name}: {exc}") from None

    async def kill(self, name: str) -> None:
        self._signal(name, self._supervisor.kill)

    async def pause(self, name: str) -> None:
        self._signal(name, self._supervisor.pause)

    async def resume(self, name: str) -> None:
        self._signal(name, self._supervisor.resume)

    async def stop(self, name: str) -> None:
        try:
            await self._supervisor.stop(self._proc(name))
        except SupervisorError as exc:
            raise ProcessControlError(f"{name}: {exc}") from None

    async def start(self, name: str) -> None:
        self._proc(name)
        await self._restart(name)

    async def restart(self, name: str) -> None:
        self._proc(name)
        await self._restart(name)

    async def logs(self, name: str, lines: int) -> tuple[str, str]:
        proc = self._proc(name)
        path = self._supervisor.log_path(proc)
        text = await asyncio.to_thread(self._supervisor.log_tail, proc, lines)
        return str(path), text


class ProcessFault:
    """A process killed (SIGKILL) or paused through any `ProcessBackend`; clearing starts or
    resumes it. The subject names the kind (`node_kill`, `store_pause`...) and the target."""

    def __init__(self, processes: ProcessBackend, kind: str, target: str, how: str) -> None:
        if how not in ("kill", "pause"):
            raise ValueError(f"a process fault kills or pauses, not {how!r}")
        self.kind = kind
        self.target = target
        self._processes = processes
        self._how = how

    def describe(self) -> str:
        word = self._processes.kind
        if self._how == "pause":
            return f"pause {self.target}'s {word}: its ports stay open but it answers no one"
        return f"SIGKILL {self.target}'s {word}; it stays down (data intact) until cleared"

    async def inject(self) -> None:
        if self._how == "pause":
            await self._processes.pause(self.target)
        else:
            await self._processes.kill(self.target)

    async def clear(self) -> None:
        await self._processes.refresh()
        state = self._processes.status(self.target)
        if self._how == "pause":
            if state == "paused":
                await self._processes.resume(self.target)
        elif state in (*DEAD, None):
            await self._processes.start(self.target)
