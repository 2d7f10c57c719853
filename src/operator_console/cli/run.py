"""`operator-console run` and `watch`: a scenario, or a cluster the console did not start, in the
console or headless with the timeline on stdout."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from operator_console.actions.store import Mode
from operator_console.cli.context import FilePath, cli_context, db_option
from operator_console.contract import SpecError, UnknownSubjectError, get_subject_kind
from operator_console.runtime import RunOptions, Runtime
from operator_console.scenarios import ScenarioError, find_scenario

F = TypeVar("F", bound=Callable[..., Any])


def run_options(func: F) -> F:
    """The options `run` and `watch` share."""
    options = [
        click.option(
            "--headless",
            is_flag=True,
            help="No console: timeline as JSON lines on stdout. Without it the console opens.",
        ),
        click.option("--quiet", is_flag=True, help="No progress lines on stderr."),
        db_option,
        click.option(
            "--interval",
            type=click.FloatRange(min=0.1, max=60),
            help="Monitor tick in seconds (default 1).",
        ),
        click.option(
            "--mode",
            type=click.Choice(["observe", "approve", "auto"]),
            help="observe: diagnose and propose only; approve (default): every action waits for "
            "a person; auto: low and medium risk run, high waits. For this run only (the "
            "persisted mode: operator-console mode set).",
        ),
        click.option(
            "--brain",
            type=click.Choice(["auto", "claude", "rules"]),
            default="auto",
            show_default=True,
            help="Claude (needs ANTHROPIC_API_KEY or ANTHROPIC_BASE_URL) or the offline rules "
            "brain.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _prepare(interval: float | None, brain: str) -> Any:
    context = cli_context()
    context.set("interval", interval)
    settings = context.settings
    if brain == "claude" and not (settings.anthropic_api_key or settings.anthropic_base_url):
        raise click.ClickException(
            "--brain claude needs ANTHROPIC_API_KEY (or ANTHROPIC_BASE_URL for a compatible "
            "server); set one, or use --brain rules"
        )
    return context


def _headless(runtime: Runtime, runner: Any, quiet: bool) -> None:
    from operator_console.scenarios.headless import Interrupted, run_headless

    try:
        outcome = asyncio.run(run_headless(runtime, runner, quiet=quiet))
    except Interrupted as stopped:
        click.echo(f"{stopped}: every process of the run was stopped", err=True)
        sys.exit(128 + stopped.signum)
    except KeyboardInterrupt:  # a second Ctrl+C while stopping
        click.echo("interrupted; every process of the run was stopped", err=True)
        sys.exit(130)
    sys.exit(0 if outcome.ok else 1)


def _stack(directory: Path, subject: str) -> Path:
    """Check a compose stack's folder now (its compose file and endpoints file): one clear line
    for a wrong one, before anything starts."""
    from operator_console.lab.compose import ComposeStack
    from operator_console.lab.compose_file import ComposeError
    from operator_console.lab.containers import DockerEngine

    try:
        stack = ComposeStack(directory, DockerEngine())
        endpoints = stack.endpoints()
        get_subject_kind(subject).validate_endpoints(endpoints)
    except ComposeError as exc:
        raise click.ClickException(str(exc)) from None
    except SpecError as exc:
        raise click.ClickException(f"{stack.endpoints_path()}: {exc}") from None
    return stack.file.path.parent.resolve()


def _scenario_stack(loaded: Any, given: Path | None) -> Path:
    """The stack a compose run uses: --compose, else the scenario's own `compose` folder
    (relative to the working directory, or to the project the scenario file is in)."""
    if given is not None:
        return given
    if not loaded.compose:
        raise click.UsageError("--placement compose needs --compose DIR (a folder of compose/)")
    named = Path(loaded.compose)
    if named.is_absolute() or named.exists() or loaded.path is None:
        return named
    beside = Path(loaded.path).resolve().parent.parent / named
    return beside if beside.exists() else named


@click.command()
@click.argument("scenario")
@run_options
@click.option(
    "--placement",
    type=click.Choice(["local", "compose"]),
    help="local: the console starts the processes itself; compose: it brings the compose "
    "stack (--compose DIR) up, runs the scenario on its containers and brings it down. "
    "Default: the scenario's own.",
)
@click.option(
    "--compose",
    "compose_dir",
    type=FilePath(directory=True),
    help="The compose stack's folder (e.g. compose/etcd/host); implies --placement compose.",
)
@click.option("--no-agent", is_flag=True, help="Baseline: no agent; the scenario clears its fault.")
@click.option(
    "--pace",
    type=click.FloatRange(min=0.05, max=10),
    default=1.0,
    show_default=True,
    help="Scale chapter durations and countdowns (0.5 runs the story twice as fast).",
)
def run(
    scenario: str,
    headless: bool,
    quiet: bool,
    interval: float | None,
    mode: str | None,
    brain: str,
    placement: str | None,
    compose_dir: Path | None,
    no_agent: bool,
    pace: float,
) -> None:
    """Run SCENARIO (a name from `scenarios list`, or a path to a .toml file)."""
    try:
        loaded = find_scenario(scenario)
    except ScenarioError as exc:
        raise click.ClickException(str(exc)) from None
    where = placement or ("compose" if compose_dir is not None else loaded.placement)
    if where == "compose":
        stack = _stack(_scenario_stack(loaded, compose_dir), loaded.subject)
        loaded = loaded.on_stack(str(stack))
    elif loaded.placement == "compose":
        raise click.UsageError(
            f"{loaded.name} runs only on a compose stack (its own is {loaded.compose}); "
            "drop --placement local"
        )
    context = _prepare(interval, brain)
    context.setup_logging()
    options = RunOptions(agent=not no_agent, brain=brain, mode=Mode(mode) if mode else None)
    if not headless:
        from operator_console.tui.app import OperatorApp

        OperatorApp(
            settings=context.settings,
            engine=context.engine,
            pace=pace,
            scenario=loaded,
            options=options,
        ).run()
        return
    from operator_console.scenarios.headless import scenario_runner

    runtime = Runtime(
        loaded.plan,
        context.settings,
        context.engine,
        agent=options.agent,
        brain=options.brain,
        mode=options.mode,
    )
    _headless(runtime, scenario_runner(runtime, loaded, pace=pace), quiet)


@click.command()
@click.argument("subject")
@click.option(
    "--endpoints",
    "endpoints_file",
    type=FilePath(),
    help="JSON endpoints of the cluster: what `lab up` prints, or the same shape by hand.",
)
@click.option(
    "--compose",
    "compose_dir",
    type=FilePath(directory=True),
    help="A running compose stack's folder: its endpoints file, and its containers for the "
    "actions that restart or resume a process and for the log tool.",
)
@run_options
@click.option(
    "--duration",
    type=click.FloatRange(min=1),
    help="Stop after this many seconds (default: until Ctrl+C or q).",
)
def watch(
    subject: str,
    endpoints_file: Path | None,
    compose_dir: Path | None,
    headless: bool,
    quiet: bool,
    interval: float | None,
    mode: str | None,
    brain: str,
    duration: float | None,
) -> None:
    """Watch a running cluster of SUBJECT that this console did not start: detect, diagnose,
    propose and verify; no fault injection, and only actions the system's own interfaces allow
    (with --compose, also its containers': restart, unpause, logs)."""
    from operator_console.scenarios.watch import (
        EndpointsError,
        WatchRunner,
        load_endpoints,
        watch_plan,
    )

    if endpoints_file is None and compose_dir is None:
        raise click.UsageError("give --endpoints FILE, or --compose DIR for a compose stack")
    try:
        kind = get_subject_kind(subject)
    except UnknownSubjectError as exc:
        raise click.BadParameter(str(exc), param_hint="SUBJECT") from None
    stack: Path | None = None
    endpoints: dict[str, Any] = {}
    if compose_dir is not None:
        stack = _stack(compose_dir, subject)
    if endpoints_file is not None:
        try:
            endpoints = load_endpoints(endpoints_file)
            # The subject checks the file now: a wrong field is one line, before anything starts.
            kind.validate_endpoints(endpoints)
        except EndpointsError as exc:
            raise click.ClickException(str(exc)) from None
        except SpecError as exc:
            raise click.ClickException(f"{endpoints_file}: {exc}") from None
    elif stack is not None:
        from operator_console.lab.compose import ComposeStack
        from operator_console.lab.containers import DockerEngine

        endpoints = ComposeStack(stack, DockerEngine()).endpoints()
    context = _prepare(interval, brain)
    context.setup_logging()
    options = RunOptions(agent=True, brain=brain, mode=Mode(mode) if mode else None)
    plan = watch_plan(subject, endpoints, compose=str(stack) if stack is not None else None)
    if not headless:
        from operator_console.tui.app import OperatorApp

        OperatorApp(
            settings=context.settings,
            engine=context.engine,
            watch=(plan, duration),
            options=options,
        ).run()
        return
    runtime = Runtime(
        plan,
        context.settings,
        context.engine,
        agent=options.agent,
        brain=options.brain,
        mode=options.mode,
    )
    _headless(runtime, WatchRunner(runtime, duration=duration), quiet)
