"""`operator-console scenarios` and `tickets`: what can be run and what the monitor found."""

from __future__ import annotations

import json
from typing import Any

import click

from operator_console.cli.context import cli_context, db_option
from operator_console.db import TicketRepository
from operator_console.dossier import TicketDossier
from operator_console.scenarios import list_scenarios


@click.group()
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


@click.group()
def tickets() -> None:
    """Tickets the monitor opened."""


@tickets.command("list")
@db_option
@click.option("--run", "run_id", help="Only tickets of this run.")
@click.option("--state", "states", multiple=True, help="Only tickets in this state (repeatable).")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def tickets_list(run_id: str | None, states: tuple[str, ...], limit: int, as_json: bool) -> None:
    """Newest tickets first."""
    repo = TicketRepository(cli_context().existing_engine)
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
def tickets_show(ticket_id: int, as_json: bool) -> None:
    """One ticket with the observation that opened it, its transcript, actions and audit rows."""
    dossier = TicketDossier.load(cli_context().existing_engine, ticket_id)
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
