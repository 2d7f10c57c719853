"""`operator-console actions` and `kill-switch`: decide proposals from any terminal."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import click

from operator_console.actions.store import (
    ActionRepository,
    ActionState,
    ApprovalError,
    Controls,
    Mode,
)
from operator_console.cli.context import cli_context, db_option
from operator_console.db import RunRepository
from operator_console.db.models import ActionRow

HEADER = (
    f"{'ID':>5}  {'STATE':<23} {'RISK':<7} {'ACTION':<16} {'PARAMS':<34} {'TICKET':<7} "
    f"{'RUN (SCENARIO)':<44} PROPOSED BY"
)


def _line(row: ActionRow, scenarios: dict[str, str]) -> str:
    params = json.dumps(row.params, separators=(",", ":"))
    state = row.state
    if row.state == ActionState.SCHEDULED.value and row.scheduled_for is not None:
        state = f"{row.state} {row.scheduled_for:%a %H:%M} UTC"
    run = f"{row.run_id or '-'} ({scenarios.get(row.run_id or '', '?')})"
    ticket = f"#{row.ticket_id}" if row.ticket_id is not None else "-"
    return (
        f"{row.id:>5}  {state:<23} {row.risk:<7} {row.name:<16} {params:<34} {ticket:<7} "
        f"{run:<44} {row.proposed_by}"
    )


def _steps(row: ActionRow) -> list[str]:
    """A chain's steps, one line each, with their state and what they said."""
    lines = []
    for step in row.steps or []:
        params = json.dumps(step.get("params") or {}, separators=(",", ":"))
        detail = f": {step['detail']}" if step.get("detail") else ""
        lines.append(
            f"  {step['index']}. {step['action']} {params} [{step.get('risk', '?')}] "
            f"{step.get('state', 'pending')}{detail}"
        )
    return lines


@click.group()
def actions() -> None:
    """Proposed actions: list, show, approve, reject."""


@actions.command("list")
@db_option
@click.option("--state", "states", multiple=True, help="Only actions in this state.")
@click.option("--run", "run_id", help="Only actions of this run.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def actions_list(states: tuple[str, ...], run_id: str | None, limit: int, as_json: bool) -> None:
    """Newest first; `--state proposed` shows what waits for a decision."""
    rows = ActionRepository(cli_context().existing_engine).find(
        run_id=run_id, states=list(states) or None, limit=limit
    )
    if as_json:
        for row in rows:
            click.echo(json.dumps(row.to_dict(), default=str))
        return
    if not rows:
        click.echo("no actions")
        return
    runs = RunRepository(cli_context().existing_engine)
    scenarios = {}
    for run in {row.run_id for row in rows if row.run_id}:
        found = runs.get(run)
        scenarios[run] = found.scenario if found is not None else "?"
    click.echo(HEADER)
    for row in rows:
        click.echo(_line(row, scenarios))


@actions.command("show")
@click.argument("action_id", type=int)
@db_option
@click.option("--json", "as_json", is_flag=True)
def actions_show(action_id: int, as_json: bool) -> None:
    """Everything about one action."""
    row = ActionRepository(cli_context().existing_engine).get(action_id)
    if row is None:
        raise click.ClickException(f"no action {action_id}; see `operator-console actions list`")
    data = row.to_dict()
    if as_json:
        click.echo(json.dumps(data, default=str, indent=2))
        return
    for key, value in data.items():
        if value in (None, "", []) or key == "steps":
            continue
        click.echo(f"{key:<16} {json.dumps(value) if isinstance(value, dict) else value}")
    if row.steps:
        click.echo(f"steps ({len(row.steps)}, one approval covers them all):")
        for line in _steps(row):
            click.echo(line)


_DURATION = re.compile(r"^(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?$")


def parse_after(text: str, now: datetime) -> datetime:
    """`90s`, `10m`, `2h` or `1h30m` from now."""
    match = _DURATION.match(text.strip())
    if not text.strip() or match is None or not any(match.groupdict().values()):
        raise click.BadParameter(f"{text!r} is not a duration; write e.g. 90s, 10m, 2h or 1h30m")
    parts = {k: int(v or 0) for k, v in match.groupdict().items()}
    return now + timedelta(hours=parts["h"], minutes=parts["m"], seconds=parts["s"])


def parse_at(text: str, now: datetime) -> datetime:
    """An ISO-8601 time with its zone (`2026-12-12T02:00Z`), or `HH:MM` UTC (the next one)."""
    clock = re.fullmatch(r"(\d{1,2}):(\d{2})", text.strip())
    if clock:
        hours, minutes = int(clock[1]), int(clock[2])
        if hours > 23 or minutes > 59:
            raise click.BadParameter(f"{text!r} is not a time of day")
        at = now.replace(hour=hours, minute=minutes, second=0, microsecond=0)
        return at if at > now else at + timedelta(days=1)
    try:
        at = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not a time; write e.g. 2026-12-12T02:00Z or 02:00 (UTC)"
        ) from None
    if at.tzinfo is None:
        raise click.BadParameter(f"{text!r} has no time zone; add Z for UTC (e.g. {text}Z)")
    return at.astimezone(UTC)


@actions.command("approve")
@click.argument("action_id", type=int)
@db_option
@click.option("--reason", default="", help="Why (kept in the audit log).")
@click.option("--at", "at_text", help="Run it at this time: 2026-12-12T02:00Z, or 02:00 (UTC).")
@click.option("--after", "after_text", help="Run it after this long: 90s, 10m, 2h, 1h30m.")
@click.option(
    "--now", "run_now", is_flag=True, help="Run a high-risk action at once, outside the windows."
)
def actions_approve(
    action_id: int, reason: str, at_text: str | None, after_text: str | None, run_now: bool
) -> None:
    """Approve one proposed action (single use, bound to its exact parameters, expires), to
    run now or later; a high-risk one waits for the next maintenance window unless --now."""
    if sum(bool(x) for x in (at_text, after_text, run_now)) > 1:
        raise click.UsageError("give at most one of --at, --after and --now")
    context = cli_context()
    now = datetime.now(UTC)
    at = parse_at(at_text, now) if at_text else None
    if after_text:
        at = parse_after(after_text, now)
    engine = context.existing_engine
    repo = ActionRepository(engine)
    try:
        approval = repo.approve(
            action_id,
            by="person:cli",
            reason=reason,
            at=at,
            windows=context.settings.windows,
            run_now=run_now,
        )
    except ApprovalError as exc:
        raise click.ClickException(str(exc)) from None
    row = repo.get(action_id)
    expires = f"the approval expires at {approval.expires_at:%a %H:%M:%S} UTC and is used once"
    if row is not None and row.state == ActionState.SCHEDULED.value and row.scheduled_for:
        click.echo(
            f"scheduled action {action_id} to run at {row.scheduled_for:%a %Y-%m-%d %H:%M:%S} "
            f"UTC ({row.policy_reason}); {expires}"
        )
        return
    click.echo(f"approved action {action_id}; {expires}")


@actions.command("reject")
@click.argument("action_id", type=int)
@db_option
@click.option("--reason", required=True, help="Why (kept in the audit log).")
def actions_reject(action_id: int, reason: str) -> None:
    """Reject one proposed (or approved, not yet running) action."""
    engine = cli_context().existing_engine
    try:
        ActionRepository(engine).reject(action_id, by="person:cli", reason=reason)
    except ApprovalError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"rejected action {action_id}")


@click.group("kill-switch")
def kill_switch() -> None:
    """Stop the agent and the executor, cancel pending actions, force observe mode."""


@kill_switch.command("on")
@db_option
def kill_switch_on() -> None:
    cancelled = Controls(cli_context().engine).set_kill_switch(True, by="person:cli")
    click.echo(
        f"kill switch ON: mode forced to observe, {len(cancelled)} pending action(s) cancelled"
    )


@kill_switch.command("off")
@db_option
def kill_switch_off() -> None:
    Controls(cli_context().engine).set_kill_switch(False, by="person:cli")
    click.echo("kill switch off; mode stays observe until changed (operator-console mode set M)")


@kill_switch.command("status")
@db_option
def kill_switch_status() -> None:
    controls = Controls(cli_context().existing_engine)
    state = "ON" if controls.kill_switch() else "off"
    click.echo(f"kill switch {state}; mode {controls.mode().value}")


def _controls(*, existing: bool) -> Controls:
    context = cli_context()
    engine = context.existing_engine if existing else context.engine
    return Controls(engine, default_mode=Mode(context.settings.mode))


@click.group("mode")
def mode() -> None:
    """The operating mode every console starts in: observe, approve or auto."""


@mode.command("show")
@db_option
def mode_show() -> None:
    controls = _controls(existing=True)
    kill = " (the kill switch is ON)" if controls.kill_switch() else ""
    click.echo(f"mode {controls.mode().value}{kill}")


@mode.command("set")
@click.argument("new", metavar="MODE", type=click.Choice([m.value for m in Mode]))
@db_option
def mode_set(new: str) -> None:
    """Persist the mode (what `m` in the console does); `run --mode` holds for one run only."""
    controls = _controls(existing=False)
    try:
        previous = controls.set_mode(Mode(new), by="person:cli")
    except ApprovalError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"mode {new} (was {previous.value})")


__all__ = ["Mode", "actions", "kill_switch", "mode"]
