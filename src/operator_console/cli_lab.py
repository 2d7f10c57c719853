"""`operator-console lab`: run a subject's local cluster by hand, outside any scenario."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from typing import Any

import click
import httpx
import psutil

from operator_console.domain import WorkloadSample
from operator_console.runtime import new_run_id
from operator_console.settings import Settings
from operator_console.subjects import UnknownSubjectError, get_subject_kind


def _read_state(settings: Settings) -> dict[str, Any] | None:
    try:
        return json.loads(settings.lab_state_file.read_text())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@click.group()
def lab() -> None:
    """Run a local cluster by hand (no scenario, no monitor)."""


@lab.command("up")
@click.option("--nodes", type=click.IntRange(1, 9), default=3, show_default=True)
@click.option("--subject", default="ratelimiter", show_default=True)
def lab_up(nodes: int, subject: str) -> None:
    """Start a cluster in the foreground and print its endpoints; Ctrl+C stops it."""
    settings = Settings()
    state = _read_state(settings)
    if state and _alive(int(state.get("pid", 0))):
        raise click.ClickException(
            f"a lab is already up (pid {state['pid']}); stop it with `operator-console lab down`"
        )
    try:
        kind = get_subject_kind(subject)
    except UnknownSubjectError as exc:
        raise click.ClickException(str(exc)) from None
    run_dir = settings.runs_dir / f"lab-{new_run_id()}"

    def ignore(_sample: WorkloadSample) -> None:
        return None

    async def serve() -> None:
        deployment = kind.deploy({"nodes": nodes}, {}, run_dir, ignore)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, stop.set)
        try:
            await deployment.lab.start()
            endpoints = deployment.lab.endpoints()
            settings.lab_state_file.parent.mkdir(parents=True, exist_ok=True)
            settings.lab_state_file.write_text(
                json.dumps(
                    {
                        "pid": os.getpid(),
                        "subject": subject,
                        "run_dir": str(run_dir),
                        "endpoints": endpoints,
                    },
                    indent=2,
                )
            )
            click.echo(json.dumps(endpoints, indent=2))
            click.echo(f"logs in {run_dir / 'logs'}; Ctrl+C (or `lab down`) stops it", err=True)
            await stop.wait()
        finally:
            await asyncio.shield(deployment.lab.stop())
            with contextlib.suppress(OSError):
                settings.lab_state_file.unlink()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    click.echo("lab stopped", err=True)


@lab.command("status")
def lab_status() -> None:
    """Show the running lab's endpoints and whether each answers."""
    settings = Settings()
    state = _read_state(settings)
    if not state or not _alive(int(state.get("pid", 0))):
        click.echo("no lab is up; start one with `operator-console lab up`")
        return
    click.echo(f"lab pid {state['pid']} ({state['subject']}), logs in {state['run_dir']}/logs")
    endpoints = state.get("endpoints", {})
    store = endpoints.get("store", {})
    if store:
        click.echo(f"  store  {store.get('url')}")
    with httpx.Client(timeout=1.0) as client:
        for name, node in endpoints.get("nodes", {}).items():
            url = node["url"]
            try:
                response = client.get(f"{url}/api/health")
                body = response.json()
                verdict = "ok" if body.get("ok") else f"unhealthy ({json.dumps(body)[:120]})"
            except httpx.HTTPError as exc:
                verdict = f"not answering ({type(exc).__name__})"
            click.echo(f"  {name:<6} {url}  {verdict}")


@lab.command("down")
@click.option("--timeout", type=float, default=15.0, show_default=True)
def lab_down(timeout: float) -> None:
    """Stop the lab that `lab up` started."""
    settings = Settings()
    state = _read_state(settings)
    if not state or not _alive(int(state.get("pid", 0))):
        with contextlib.suppress(OSError):
            settings.lab_state_file.unlink()
        click.echo("no lab is up")
        return
    pid = int(state["pid"])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        raise click.ClickException(f"lab pid {pid} did not stop within {timeout:g} s")
    click.echo("lab stopped")
