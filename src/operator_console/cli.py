"""Command line: no arguments opens the console; subcommands run scenarios headless and more."""

from __future__ import annotations

import asyncio
import faulthandler
import json
import logging
import signal
import sys
from collections.abc import Callable
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import IO, Any, TypeVar

import click
from sqlalchemy.engine import Engine

from operator_console.actions.store import Mode
from operator_console.audit import register_secrets_from_env
from operator_console.cli_actions import actions, kill_switch
from operator_console.cli_audit import audit
from operator_console.cli_lab import lab
from operator_console.cli_serve import serve
from operator_console.db import (
    DatabaseError,
    TicketRepository,
    create_db_engine,
    init_db,
)
from operator_console.dossier import TicketDossier
from operator_console.scenarios import ScenarioError, find_scenario, list_scenarios
from operator_console.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])


def _settings(db: str | None = None, interval: float | None = None) -> Settings:
    overrides: dict[str, Any] = {}
    if db:
        overrides["db"] = db
    if interval is not None:
        overrides["interval"] = interval
    return Settings(**overrides)


class _RedactingFilter(logging.Filter):
    """Last line of defence: no secret reaches the log file, whoever logged it."""

    def filter(self, record: logging.LogRecord) -> bool:
        from operator_console.audit.redact import redact_text

        message = record.getMessage()
        cleaned = redact_text(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def _setup_logging(settings: Settings) -> Path:
    """Log to a file: the terminal belongs to the timeline and the console."""
    log_dir = settings.data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / "operator-console.log"
    handler = RotatingFileHandler(path, maxBytes=5_000_000, backupCount=3)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for noisy in ("httpx", "httpcore", "anthropic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # `kill -USR1 PID` writes every thread's stack to this file: how to see where it is stuck.
    global _stack_dump_file
    if _stack_dump_file is None:
        _stack_dump_file = open(log_dir / "stacks.log", "a")  # kept open for the process
        faulthandler.register(signal.SIGUSR1, file=_stack_dump_file, all_threads=True)
    return path


_stack_dump_file: IO[str] | None = None


def _engine(settings: Settings) -> Engine:
    try:
        engine = create_db_engine(settings.db_url)
        init_db(engine)
    except DatabaseError as exc:
        raise click.ClickException(str(exc)) from None
    return engine


def db_option(func: F) -> F:
    return click.option(
        "--db",
        "db",
        metavar="URL",
        help="SQLAlchemy database URL (default: SQLite in the user data folder; "
        "env OPERATOR_CONSOLE_DB).",
    )(func)


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="operator-console")
@click.pass_context
def main(ctx: click.Context) -> None:
    """An AI operations console: watch a distributed system, catch faults, prove the fix."""
    register_secrets_from_env()
    if ctx.invoked_subcommand is None:
        from operator_console.tui.app import OperatorApp

        settings = _settings()
        _setup_logging(settings)
        engine = _engine(settings)
        OperatorApp(settings=settings, engine=engine).run()


@main.command()
@click.argument("scenario")
@click.option(
    "--headless",
    is_flag=True,
    help="No console: timeline as JSON lines on stdout. Without it the console opens on the run.",
)
@click.option("--quiet", is_flag=True, help="No progress lines on stderr.")
@db_option
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1, max=60),
    help="Monitor tick in seconds (default 1).",
)
@click.option(
    "--mode",
    type=click.Choice(["observe", "approve", "auto"]),
    help="observe: diagnose and propose only; approve (default): every action waits for a "
    "person; auto: low and medium risk run, high waits. Persisted.",
)
@click.option(
    "--brain",
    type=click.Choice(["auto", "claude", "rules"]),
    default="auto",
    show_default=True,
    help="Claude (needs ANTHROPIC_API_KEY or ANTHROPIC_BASE_URL) or the offline rules brain.",
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
    db: str | None,
    interval: float | None,
    mode: str | None,
    brain: str,
    no_agent: bool,
    pace: float,
) -> None:
    """Run SCENARIO (a name from `scenarios list`, or a path to a .toml file)."""
    from operator_console.runtime import RunOptions, Runtime
    from operator_console.scenarios.headless import Interrupted, run_headless

    settings = _settings(db, interval)
    try:
        loaded = find_scenario(scenario)
    except ScenarioError as exc:
        raise click.ClickException(str(exc)) from None
    if brain == "claude" and not (settings.anthropic_api_key or settings.anthropic_base_url):
        raise click.ClickException(
            "--brain claude needs ANTHROPIC_API_KEY (or ANTHROPIC_BASE_URL for a compatible "
            "server); set one, or use --brain rules"
        )
    _setup_logging(settings)
    engine = _engine(settings)
    options = RunOptions(agent=not no_agent, brain=brain, mode=Mode(mode) if mode else None)
    if not headless:
        from operator_console.tui.app import OperatorApp

        OperatorApp(
            settings=settings, engine=engine, pace=pace, scenario=loaded, options=options
        ).run()
        return
    runtime = Runtime(
        loaded, settings, engine, agent=options.agent, brain=options.brain, mode=options.mode
    )
    try:
        outcome = asyncio.run(run_headless(runtime, pace=pace, quiet=quiet))
    except Interrupted as stopped:
        click.echo(f"{stopped}: every process of the run was stopped", err=True)
        sys.exit(128 + stopped.signum)
    except KeyboardInterrupt:  # a second Ctrl+C while stopping
        click.echo("interrupted; every process of the run was stopped", err=True)
        sys.exit(130)
    sys.exit(0 if outcome.ok else 1)


@main.group()
def scenarios() -> None:
    """Scenario files."""


@scenarios.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per scenario.")
def scenarios_list(as_json: bool) -> None:
    """List every scenario with its subject and description."""
    good, bad = list_scenarios()
    for s in good:
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "name": s.name,
                        "title": s.title,
                        "subject": s.subject,
                        "description": s.description,
                        "chapters": len(s.chapters),
                        "expect": s.expect.invariants,
                        "path": str(s.path),
                    }
                )
            )
        else:
            click.echo(f"{s.name:<32} {s.subject:<12} {s.description}")
    for error in bad:
        click.echo(f"broken: {error}", err=True)


@main.group()
def tickets() -> None:
    """Tickets the monitor opened."""


@tickets.command("list")
@db_option
@click.option("--run", "run_id", help="Only tickets of this run.")
@click.option("--state", "states", multiple=True, help="Only tickets in this state (repeatable).")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def tickets_list(
    db: str | None, run_id: str | None, states: tuple[str, ...], limit: int, as_json: bool
) -> None:
    """Newest tickets first."""
    repo = TicketRepository(_engine(_settings(db)))
    rows = repo.list(run_id=run_id, states=list(states) or None, limit=limit)
    if as_json:
        for row in rows:
            click.echo(json.dumps(row.to_dict(), default=str))
        return
    if not rows:
        click.echo("no tickets")
        return
    click.echo(f"{'ID':>5}  {'STATE':<14} {'INVARIANT':<20} {'TARGET':<14} {'SEEN':>5}  MESSAGE")
    for row in rows:
        click.echo(
            f"{row.id:>5}  {row.state:<14} {row.invariant:<20} {row.target:<14} "
            f"{row.occurrences:>5}  {row.message}"
        )


@tickets.command("show")
@click.argument("ticket_id", type=int)
@db_option
@click.option("--json", "as_json", is_flag=True)
def tickets_show(ticket_id: int, db: str | None, as_json: bool) -> None:
    """One ticket with the observation that opened it, its transcript, actions and audit rows."""
    dossier = TicketDossier.load(_engine(_settings(db)), ticket_id)
    if dossier is None:
        raise click.ClickException(f"no ticket {ticket_id}; see `operator-console tickets list`")
    row, steps = dossier.ticket, dossier.transcript
    data = row.to_dict(with_observation=True)
    if as_json:
        data["transcript"] = [s.model_dump(mode="json") for s in steps]
        # Newest first, as `actions list` and `audit list` print them.
        data["actions"] = [a.to_dict() for a in reversed(dossier.actions)]
        data["audit"] = [a.to_dict() for a in reversed(dossier.audit)]
        click.echo(json.dumps(data, default=str, indent=2))
        return
    for key in ("id", "run_id", "subject", "state", "severity", "invariant", "target", "message"):
        click.echo(f"{key:<18} {data[key]}")
    for key in ("occurrences", "first_seen", "last_seen", "resolved_at", "escalation_reason"):
        click.echo(f"{key:<18} {data[key]}")
    if data["details"]:
        click.echo(f"{'details':<18} {json.dumps(data['details'], default=str)}")
    observation = data.get("opened_observation") or {}
    failed = {k: v for k, v in observation.get("sources", {}).items() if v.get("state") != "ok"}
    click.echo(f"{'opened on':<18} observation at {observation.get('at')}")
    for name, source in failed.items():
        click.echo(f"  source {name}: {source.get('state')} ({source.get('reason')})")
    _show_diagnosis(row.diagnosis, row.brain)
    if steps:
        click.echo(f"transcript ({len(steps)} steps, brain {row.brain}):")
        for step in steps:
            text = step.text.replace("\n", " ")
            if step.kind == "tool_call":
                text = f"{step.tool}({json.dumps(step.input)})"
            flag = " ERROR" if step.is_error else ""
            click.echo(f"  {step.seq:>3} {step.kind:<11}{flag} {text[:160]}")
    for action in dossier.actions:
        click.echo(
            f"action {action.id}: {action.name} {json.dumps(action.params)} "
            f"[{action.state}] risk {action.risk}" + (f" - {action.error}" if action.error else "")
        )
    if dossier.audit:
        click.echo(f"audit ({len(dossier.audit)} rows):")
        for entry in dossier.audit:
            action_id = f"action {entry.action_id}" if entry.action_id is not None else ""
            click.echo(
                f"  {entry.id:>6} {entry.at:%Y-%m-%d %H:%M:%S} {entry.kind:<18} "
                f"{entry.actor:<16} {action_id}".rstrip()
            )


def _show_diagnosis(diagnosis: dict[str, Any] | None, brain: str | None) -> None:
    if not diagnosis:
        return
    click.echo(f"diagnosis (brain {brain}, confidence {diagnosis.get('confidence')}):")
    click.echo(f"  root cause   {diagnosis.get('root_cause')}")
    for item in diagnosis.get("evidence", []):
        click.echo(f"  evidence     {item.get('claim')} [{item.get('tool_use_id')}]")
    for alt in diagnosis.get("alternatives", []):
        click.echo(f"  rejected     {alt.get('hypothesis')}: {alt.get('rejected_because')}")
    for rec in diagnosis.get("recommended", []):
        click.echo(f"  recommended  {rec.get('action')} {json.dumps(rec.get('params'))}")


main.add_command(lab)
main.add_command(actions)
main.add_command(kill_switch)
main.add_command(audit)
main.add_command(serve)
