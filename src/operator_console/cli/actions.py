"""`operator-console actions` and `kill-switch`: decide proposals from any terminal."""

from __future__ import annotations

import json

import click

from operator_console.actions.store import ActionRepository, ApprovalError, Controls, Mode
from operator_console.cli.context import cli_context, db_option
from operator_console.db.models import ActionRow


def _line(row: ActionRow) -> str:
    params = json.dumps(row.params, separators=(",", ":"))
    return (
        f"{row.id:>5}  {row.state:<13} {row.risk:<7} {row.name:<16} {params:<34} "
        f"ticket {row.ticket_id}  by {row.proposed_by}"
    )


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
    for row in rows:
        click.echo(_line(row))


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
        if value not in (None, ""):
            click.echo(f"{key:<16} {json.dumps(value) if isinstance(value, dict) else value}")


@actions.command("approve")
@click.argument("action_id", type=int)
@db_option
@click.option("--reason", default="", help="Why (kept in the audit log).")
def actions_approve(action_id: int, reason: str) -> None:
    """Approve one proposed action (single use, bound to its exact parameters, expires)."""
    engine = cli_context().existing_engine
    try:
        approval = ActionRepository(engine).approve(action_id, by="person:cli", reason=reason)
    except ApprovalError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"approved action {action_id}; the approval expires at "
        f"{approval.expires_at:%H:%M:%S} UTC and is used once"
    )


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
    click.echo("kill switch off; mode stays observe until changed (run --mode ...)")


@kill_switch.command("status")
@db_option
def kill_switch_status() -> None:
    controls = Controls(cli_context().existing_engine)
    state = "ON" if controls.kill_switch() else "off"
    click.echo(f"kill switch {state}; mode {controls.mode().value}")


__all__ = ["Mode", "actions", "kill_switch"]
