"""`operator-console lab`: run a subject's local cluster by hand, outside any scenario.

`lab up` prints the endpoints file that `watch` takes, so a cluster started here can be watched
by a console that did not start it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator, Mapping
from typing import Any

import click
import httpx
import psutil

from operator_console.cli.context import cli_context
from operator_console.contract import SpecError, SubjectKind, UnknownSubjectError, subject_kinds
from operator_console.domain import WorkloadSample
from operator_console.runtime import new_run_id
from operator_console.settings import Settings


def _read_state(settings: Settings) -> dict[str, Any] | None:
    try:
        data = json.loads(settings.lab_state_file.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except (psutil.Error, ValueError):
        return False


def choose_kind(name: str | None) -> SubjectKind:
    """The named subject, or the only one installed; one clear line otherwise."""
    kinds = subject_kinds()
    if name is None:
        if len(kinds) == 1:
            return next(iter(kinds.values()))
        raise click.UsageError(f"give --subject, one of: {', '.join(sorted(kinds))}")
    try:
        return kinds[name]
    except KeyError:
        known = ", ".join(sorted(kinds)) or "none installed"
        raise click.BadParameter(f"unknown subject {name!r} (known: {known})") from None


def processes(
    endpoints: Mapping[str, Any], prefix: str = ""
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every entry of an endpoints file that names a process or an address, with its path."""
    for key, value in endpoints.items():
        if not isinstance(value, Mapping):
            continue
        name = f"{prefix}{key}"
        if "pid" in value or "url" in value:
            yield name, dict(value)
        else:
            yield from processes(value, f"{name}.")


@click.group()
def lab() -> None:
    """Run a local cluster by hand (no scenario, no monitor)."""


@lab.command("up")
@click.option("--subject", help="Which subject (see `scenarios list`); needed when several are.")
@click.option("--size", type=click.IntRange(1, 9), help="How many nodes or members.")
@click.option("--nodes", "size_alias", type=click.IntRange(1, 9), hidden=True)
@click.option("--json", "as_json", is_flag=True, help="Endpoints as one line of JSON.")
def lab_up(subject: str | None, size: int | None, size_alias: int | None, as_json: bool) -> None:
    """Start a cluster in the foreground and print its endpoints; Ctrl+C stops it."""
    settings = cli_context().settings
    state = _read_state(settings)
    if state and _alive(int(state.get("pid", 0))):
        raise click.ClickException(
            f"a lab is already up (pid {state['pid']}); stop it with `operator-console lab down`"
        )
    kind = choose_kind(subject)
    size = size or size_alias
    try:
        topology = kind.sized(size) if size else {}
    except (SpecError, UnknownSubjectError) as exc:
        raise click.BadParameter(str(exc), param_hint="--size") from None
    run_dir = settings.runs_dir / f"lab-{new_run_id()}"
    try:
        kind.validate(topology, {})
    except SpecError as exc:
        raise click.ClickException(f"{kind.name}: {exc}") from None

    def ignore(_sample: WorkloadSample) -> None:
        return None

    async def serve() -> None:
        deployment = kind.deploy(topology, None, run_dir, ignore)
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
                        "subject": kind.name,
                        "run_dir": str(run_dir),
                        "about": deployment.lab.about(),
                        "endpoints": endpoints,
                    },
                    indent=2,
                )
            )
            text = json.dumps(endpoints) if as_json else json.dumps(endpoints, indent=2)
            click.echo(text)
            click.echo(
                f"logs in {run_dir / 'logs'}; watch it with `operator-console watch {kind.name} "
                "--endpoints FILE` (FILE holds the JSON above); Ctrl+C (or `lab down`) stops it",
                err=True,
            )
            await stop.wait()
        finally:
            await asyncio.shield(deployment.lab.stop())
            with contextlib.suppress(OSError):
                settings.lab_state_file.unlink()

    with contextlib.suppress(KeyboardInterrupt):
        try:
            asyncio.run(serve())
        except (OSError, RuntimeError, ValueError, TimeoutError) as exc:
            # A missing binary, a port taken, a process that died at start: one line, and
            # whatever did start has been stopped.
            raise click.ClickException(f"the {kind.name} lab did not start: {exc}") from None
    click.echo("lab stopped", err=True)


@lab.command("status")
@click.option("--json", "as_json", is_flag=True, help="The lab's state, with each process's pid.")
def lab_status(as_json: bool) -> None:
    """Show the running lab's endpoints and whether each of its processes is alive."""
    settings = cli_context().settings
    state = _read_state(settings)
    if not state or not _alive(int(state.get("pid", 0))):
        if as_json:
            click.echo(json.dumps({"up": False}))
        else:
            click.echo("no lab is up; start one with `operator-console lab up`")
        return
    entries = list(processes(state.get("endpoints") or {}))
    if as_json:
        rows = {
            name: {**entry, "alive": _alive(int(entry["pid"])) if entry.get("pid") else None}
            for name, entry in entries
        }
        click.echo(json.dumps({"up": True, **state, "processes": rows}))
        return
    click.echo(f"lab pid {state['pid']} ({state['subject']}), logs in {state['run_dir']}/logs")
    if state.get("about"):
        click.echo(f"  {state['about']}")
    click.echo(f"  {'NAME':<18} {'PID':>7}  {'PROCESS':<8} {'HTTP':<12} ADDRESS")
    with httpx.Client(timeout=1.0) as client:
        for name, entry in entries:
            pid = entry.get("pid")
            alive = "-" if not pid else ("running" if _alive(int(pid)) else "gone")
            url = str(entry.get("url", ""))
            click.echo(
                f"  {name:<18} {pid or '-':>7}  {alive:<8} {_answers(client, url):<12} {url}"
            )


def _answers(client: httpx.Client, url: str) -> str:
    """Whether an HTTP endpoint answers at all (any status); '-' for other kinds of address."""
    if not url.startswith(("http://", "https://")):
        return "-"
    try:
        client.get(url)  # any status will do: the process serves HTTP (its root may be a 404)
    except httpx.HTTPError as exc:
        return "timeout" if isinstance(exc, httpx.TimeoutException) else "refused"
    return "answers"


@lab.command("down")
@click.option("--timeout", type=float, default=15.0, show_default=True)
def lab_down(timeout: float) -> None:
    """Stop the lab that `lab up` started."""
    settings = cli_context().settings
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
