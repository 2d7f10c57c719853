"""Starts, pauses and stops the lab's child processes so that none outlives the console.

Each child runs in its own session (so its whole process group can be signalled at once),
writes stdout and stderr to `run_dir/logs/{name}.log`, and on Linux asks the kernel to
SIGKILL it when the console dies, even if the console itself is SIGKILLed.

Children must be started from a long-lived thread (the event loop's): the kernel's
parent-death signal fires when the *thread* that forked the child exits.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psutil

ReadyCheck = Callable[[], Awaitable[bool]]

_PR_SET_PDEATHSIG = 1
_POLL_S = 0.05
_LOG_TAIL_LINES = 20


class SupervisorError(RuntimeError):
    """A supervised process could not be started, signalled or found."""


class ProcessStartError(SupervisorError):
    """A process exited or never became ready; the message carries the tail of its log."""

    def __init__(self, name: str, reason: str, log_tail: str) -> None:
        message = f"process {name!r} failed to start: {reason}"
        if log_tail:
            message += f"\n--- last lines of its log ---\n{log_tail}"
        super().__init__(message)
        self.name = name
        self.reason = reason
        self.log_tail = log_tail


class UnknownProcessError(SupervisorError, LookupError):
    """No process of that name was ever started by this supervisor."""


@dataclass(slots=True)
class ManagedProcess:
    """One supervised child and everything needed to start it again."""

    name: str
    argv: list[str]
    env: dict[str, str] | None
    ready: ReadyCheck | None
    timeout: float
    log_path: Path
    popen: subprocess.Popen[bytes]
    state: str = "running"  # running | paused | killed | exited | stopped
    descendants: list[psutil.Process] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    @property
    def alive(self) -> bool:
        """True while the process has neither exited nor been reaped."""
        return self.popen.poll() is None


def _parent_death_preexec(parent_pid: int) -> Callable[[], None]:
    """Build the child-side hook that ties the child's life to the console's."""

    def preexec() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            return
        # The parent may have died between fork and prctl; then no signal would ever come.
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _read_tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        with path.open("r", encoding="utf-8", errors="replace") as fh:
            return "".join(deque(fh, maxlen=lines)).rstrip()
    except OSError:
        return ""


class Supervisor:
    """Owns every child process of one run: start with readiness, pause, kill, reap."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.log_dir = self.run_dir / "logs"
        self._procs: dict[str, ManagedProcess] = {}
        self._atexit_registered = False

    # ----------------------------------------------------------------- queries

    def names(self) -> list[str]:
        return list(self._procs)

    def get(self, name: str) -> ManagedProcess:
        try:
            return self._procs[name]
        except KeyError:
            known = ", ".join(self._procs) or "none"
            raise UnknownProcessError(f"no process named {name!r} (known: {known})") from None

    def status(self, name: str) -> str:
        """One of running, paused, killed, exited, stopped: as the kernel has it, so a process
        stopped or continued by someone else (`kill -STOP`, `kill -CONT`) reads as it is."""
        proc = self.get(name)
        if proc.state in ("running", "paused") and not proc.alive:
            proc.state = "exited"
        elif proc.state in ("running", "paused"):
            proc.state = "paused" if _is_stopped(proc.pid) else "running"
        return proc.state

    def pid(self, name: str) -> int:
        return self.get(name).pid

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def log_tail(self, name: str, lines: int = _LOG_TAIL_LINES) -> str:
        return _read_tail(self.log_path(name), lines)

    # --------------------------------------------------------------- lifecycle

    async def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        ready: ReadyCheck | None = None,
        timeout: float = 15.0,
    ) -> ManagedProcess:
        """Spawn `argv` as `name` and wait until `ready()` is true; `env` extends os.environ."""
        existing = self._procs.get(name)
        if existing is not None and self.status(name) in ("running", "paused"):
            raise SupervisorError(f"process {name!r} is already running (pid {existing.pid})")
        self._register_atexit()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_path(name)
        child_env = {**os.environ, **env} if env is not None else None
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        with log_path.open("ab") as log:
            log.write(f"=== {stamp} start {name}: {' '.join(argv)}\n".encode())
            log.flush()
            try:
                # Popen (not asyncio's subprocess) on purpose: it returns right after
                # exec, forks on this long-lived thread (parent-death signal), and its
                # handle can be polled synchronously from atexit and signal handlers.
                popen = subprocess.Popen(  # noqa: ASYNC220
                    list(argv),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=child_env,
                    start_new_session=True,
                    preexec_fn=(
                        _parent_death_preexec(os.getpid())
                        if sys.platform.startswith("linux")
                        else None
                    ),
                )
            except OSError as exc:
                raise ProcessStartError(name, f"cannot execute {argv[0]!r}: {exc}", "") from exc
        proc = ManagedProcess(
            name=name,
            argv=list(argv),
            env=dict(env) if env is not None else None,
            ready=ready,
            timeout=timeout,
            log_path=log_path,
            popen=popen,
        )
        self._procs[name] = proc
        await self._wait_ready(proc)
        return proc

    async def _wait_ready(self, proc: ManagedProcess) -> None:
        deadline = time.monotonic() + proc.timeout
        while True:
            code = proc.popen.poll()
            if code is not None:
                proc.state = "exited"
                raise ProcessStartError(
                    proc.name, f"exited with code {code} before it was ready", self._tail(proc)
                )
            if proc.ready is None:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                async with asyncio.timeout(max(remaining, _POLL_S)):
                    ok = await proc.ready()
            except TimeoutError:
                ok = False
            except Exception:
                ok = False
            if ok:
                if proc.popen.poll() is None:
                    return
                continue  # exited just after answering: report the exit above
            await asyncio.sleep(_POLL_S)
        self._kill_proc(proc)
        proc.state = "killed"
        raise ProcessStartError(proc.name, f"not ready within {proc.timeout:g} s", self._tail(proc))

    def _tail(self, proc: ManagedProcess) -> str:
        return _read_tail(proc.log_path)

    async def stop(self, name: str, timeout: float = 5.0) -> None:
        """SIGTERM the group, then SIGKILL it if it has not exited after `timeout`."""
        proc = self.get(name)
        if not proc.alive:
            self._reap_group(proc)
            if proc.state in ("running", "paused"):
                proc.state = "exited"
            return
        proc.descendants = self._descendants(proc)
        _signal_group(proc.pid, signal.SIGCONT)
        _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while proc.alive and time.monotonic() < deadline:
            await asyncio.sleep(_POLL_S)
        if proc.alive:
            self._kill_proc(proc)
        else:
            # The leader just left; anything it left behind in its group goes with it.
            _signal_group(proc.pid, signal.SIGKILL)
            self._reap_group(proc)
        proc.state = "stopped"

    def kill(self, name: str) -> None:
        """SIGKILL the process group at once and reap it."""
        proc = self.get(name)
        self._kill_proc(proc)
        proc.state = "killed"

    def pause(self, name: str) -> None:
        """SIGSTOP the whole group: the process keeps its sockets but answers nothing."""
        proc = self.get(name)
        if self.status(name) not in ("running", "paused"):
            raise SupervisorError(f"cannot pause {name!r}: it is {proc.state}")
        _signal_group(proc.pid, signal.SIGSTOP)
        proc.state = "paused"
        # Signal delivery is asynchronous; return once the kernel shows the leader stopped,
        # so whoever paused it observes a paused process.
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and not _is_stopped(proc.pid):
            time.sleep(0.002)

    def resume(self, name: str) -> None:
        """SIGCONT the whole group."""
        proc = self.get(name)
        if self.status(name) not in ("running", "paused"):
            raise SupervisorError(f"cannot resume {name!r}: it is {proc.state}")
        _signal_group(proc.pid, signal.SIGCONT)
        proc.state = "running"
        # As for pause: return once the kernel shows the leader running again.
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and proc.alive and _is_stopped(proc.pid):
            time.sleep(0.002)

    async def restart(self, name: str) -> ManagedProcess:
        """Stop the process if it still runs, then start it again exactly as before."""
        proc = self.get(name)
        if self.status(name) in ("running", "paused"):
            await self.stop(name)
        return await self.start(
            name, proc.argv, env=proc.env, ready=proc.ready, timeout=proc.timeout
        )

    async def stop_all(self, timeout: float = 5.0) -> None:
        """Stop every process, newest first, all at the same time."""
        names = [n for n in reversed(self._procs) if self.status(n) in ("running", "paused")]
        await asyncio.gather(*(self.stop(n, timeout) for n in names), return_exceptions=True)
        self.kill_all()

    def kill_all(self) -> None:
        """SIGCONT then SIGKILL every group; synchronous, so safe in atexit and signal handlers."""
        for proc in list(self._procs.values()):
            if proc.alive:
                self._kill_proc(proc)
                proc.state = "killed"
            else:
                self._reap_group(proc)

    # ---------------------------------------------------------------- internals

    def _register_atexit(self) -> None:
        if not self._atexit_registered:
            atexit.register(self.kill_all)
            self._atexit_registered = True

    @staticmethod
    def _descendants(proc: ManagedProcess) -> list[psutil.Process]:
        try:
            return psutil.Process(proc.pid).children(recursive=True)
        except psutil.Error:
            return []

    def _kill_proc(self, proc: ManagedProcess) -> None:
        """SIGKILL the leader's group and every known descendant, then reap the leader."""
        if proc.alive:
            known = {p.pid: p for p in proc.descendants}
            known.update({p.pid: p for p in self._descendants(proc)})
            proc.descendants = list(known.values())
            # A stopped process only dies from SIGKILL once the kernel schedules it; SIGCONT
            # first so nothing lingers half-dead.
            _signal_group(proc.pid, signal.SIGCONT)
            _signal_group(proc.pid, signal.SIGKILL)
            self._wait_leader(proc, 5.0)
        self._reap_group(proc)

    @staticmethod
    def _wait_leader(proc: ManagedProcess, timeout: float) -> None:
        # Polling (instead of Popen.wait) never blocks on Popen's internal lock, which keeps
        # this safe inside a signal handler that interrupted a wait.
        deadline = time.monotonic() + timeout
        while proc.popen.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)

    @staticmethod
    def _reap_group(proc: ManagedProcess) -> None:
        """Kill descendants that escaped the group (e.g. via setsid) and forget them."""
        survivors = [p for p in proc.descendants if _is_running(p)]
        for p in survivors:
            with contextlib.suppress(psutil.Error):
                p.kill()
        if survivors:
            psutil.wait_procs(survivors, timeout=2.0)
        proc.descendants = []

    def __iter__(self) -> Iterator[ManagedProcess]:
        return iter(list(self._procs.values()))


def _is_running(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _is_stopped(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() in (psutil.STATUS_STOPPED, psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return True
