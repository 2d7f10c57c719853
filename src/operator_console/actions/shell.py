"""`run_shell`: a command the agent asks to run, off unless a setting enables it.

Every call is an action like any other: high risk, so the policy never runs it without a
person's approval, in any mode. It runs with a timeout, in the run's folder, with a clean
environment (no API keys or tokens: only PATH, HOME and LANG) and its output capped. With a
Docker engine at hand it runs in a throwaway container instead (`lab/sandbox.py`): no Docker
socket, a read-only root, no capabilities, the stack's network only, the same timeout and cap.
It is a diagnostic: it restores no invariant, so it is neither retried nor verified, and its
exit status is part of its result rather than a failure.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from operator_console.audit.redact import redact_text
from operator_console.contract import ActionSpec

if TYPE_CHECKING:
    from operator_console.lab.sandbox import ShellSandbox

log = logging.getLogger(__name__)

SHELL_ACTION = "run_shell"
SANDBOX_PING_S = 3.0
CLEAN_PATH = "/usr/local/bin:/usr/bin:/bin"


class ShellParams(BaseModel):
    command: str = Field(min_length=1, max_length=2000, description="a /bin/sh command line")


def clean_environment(home: Path) -> dict[str, str]:
    """What a command sees: nothing of the console's own environment (keys live there)."""
    return {"PATH": CLEAN_PATH, "HOME": str(home), "LANG": "C.UTF-8"}


async def run_command(command: str, *, cwd: Path, timeout_s: float, output_cap: int) -> str:
    """Run `command` under /bin/sh; its exit status, time and capped output as text."""
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        "/bin/sh",
        "-c",
        command,
        cwd=cwd,
        env=clean_environment(cwd),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,  # its own process group, so a timeout kills all of it
    )
    assert process.stdout is not None
    kept = bytearray()
    total = 0

    async def read_all() -> None:
        nonlocal total
        assert process.stdout is not None
        while chunk := await process.stdout.read(65536):
            total += len(chunk)
            if len(kept) < output_cap:
                kept.extend(chunk[: output_cap - len(kept)])
        await process.wait()

    try:
        async with asyncio.timeout(timeout_s):
            await read_all()
        status = f"exit {process.returncode}"
    except TimeoutError:
        _kill_group(process.pid)
        await process.wait()
        status = f"timed out after {timeout_s:g} s and was killed"
    return _result(status, time.monotonic() - started, total, bytes(kept), output_cap)


def _result(status: str, elapsed: float, total: int, kept: bytes, output_cap: int) -> str:
    text = kept.decode("utf-8", errors="replace")
    size = f"{total} bytes" + (f", first {output_cap} shown" if total > output_cap else "")
    return redact_text(f"{status} in {elapsed:.1f} s; output {size}:\n{text}")


async def run_sandboxed(
    sandbox: ShellSandbox, command: str, *, timeout_s: float, output_cap: int
) -> str:
    """The same command, status, time and capped output, from a throwaway container."""
    from operator_console.lab.containers import ContainerError

    try:
        done = await sandbox.run(command, timeout_s=timeout_s, output_cap=output_cap)
    except ContainerError as exc:
        return redact_text(f"not run: the shell sandbox failed: {exc}")
    return _result(done.status, done.seconds, done.total, done.kept, output_cap)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def shell_action(
    run_dir: Path,
    *,
    timeout_s: float,
    output_cap: int,
    sandbox: ShellSandbox | None = None,
) -> ActionSpec:
    """The run_shell action for one run: commands run in `run_dir`, or in a sandbox."""

    async def run(params: ShellParams) -> str:
        await asyncio.to_thread(run_dir.mkdir, parents=True, exist_ok=True)
        if sandbox is not None:
            return await run_sandboxed(
                sandbox, params.command, timeout_s=timeout_s, output_cap=output_cap
            )
        return await run_command(
            params.command, cwd=run_dir, timeout_s=timeout_s, output_cap=output_cap
        )

    where = f"with busybox {sandbox.describe()}" if sandbox is not None else "in the run's folder"
    return ActionSpec(
        SHELL_ACTION,
        f"Run a shell command {where} (clean environment, "
        f"{timeout_s:g} s timeout, output capped at {output_cap} bytes). Always needs a person.",
        ShellParams,
        "high",
        (),
        timeout_s + 5.0,
        run,
        retry=False,
        verify=False,
        effect="diagnose",
    )


async def shell_sandbox(run_dir: Path, network: str | None) -> ShellSandbox | None:
    """A sandbox on the engine at DOCKER_HOST (or the default socket) when one answers, on
    `network` alone (None: no network); None without an engine: commands run as before."""
    from operator_console.lab.containers import ContainerError, DockerEngine
    from operator_console.lab.sandbox import ShellSandbox

    engine = DockerEngine()
    try:
        await engine.call("ping", lambda client: client.ping(), SANDBOX_PING_S)
    except ContainerError as exc:
        log.info("run_shell runs on this host: %s", exc)
        return None
    return ShellSandbox(engine, network=network, workdir=run_dir)
