"""`operator-console audit`: read the audit log and prove nobody rewrote it."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import click

from operator_console.audit import AuditLog, redact, row_summaries
from operator_console.cli.context import cli_context, db_option

if TYPE_CHECKING:
    from operator_console.audit import AuditRow


def _audit_log() -> AuditLog:
    return AuditLog(cli_context().existing_engine)


def _row_data(row: AuditRow) -> dict[str, Any]:
    # Rows were redacted when written; redacting again covers secrets registered since then.
    data: dict[str, Any] = redact(row.to_dict())
    return data


@click.group()
def audit() -> None:
    """The tamper-evident log of everything the agent, the policy and people did."""


@audit.command("list")
@db_option
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--kind", help="Only rows of this kind (e.g. approval, kill_switch).")
@click.option("--ticket", "ticket_id", type=int, help="Only rows about this ticket.")
@click.option("--run", "run_id", help="Only rows of this run.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per row.")
def audit_list(
    limit: int,
    kind: str | None,
    ticket_id: int | None,
    run_id: str | None,
    as_json: bool,
) -> None:
    """Newest rows first."""
    rows = _audit_log().list(limit=limit, kind=kind, ticket_id=ticket_id, run_id=run_id)
    if as_json:
        for row in rows:
            click.echo(json.dumps(_row_data(row), ensure_ascii=False))
        return
    if not rows:
        click.echo("no audit rows")
        return
    lines = row_summaries(_audit_log(), rows)
    click.echo(f"{'ID':>6}  {'AT':<19} {'KIND':<18} {'ACTOR':<16} {'TICKET':>6}  SUMMARY")
    for row in rows:
        data = _row_data(row)
        ticket = "" if row.ticket_id is None else str(row.ticket_id)
        click.echo(
            f"{row.id:>6}  {row.at.strftime('%Y-%m-%d %H:%M:%S'):<19} {data['kind']:<18} "
            f"{data['actor']:<16} {ticket:>6}  {lines.get(row.id or 0, '')}"
        )


@audit.command("show")
@click.argument("row_id", metavar="ID", type=int)
@db_option
@click.option("--json", "as_json", is_flag=True)
def audit_show(row_id: int, as_json: bool) -> None:
    """One row in full, with its hashes."""
    row = _audit_log().get(row_id)
    if row is None:
        raise click.ClickException(f"no audit row {row_id}; see `operator-console audit list`")
    data = _row_data(row)
    if as_json:
        click.echo(json.dumps(data, ensure_ascii=False, indent=2))
        return
    for key in ("id", "at", "kind", "actor", "run_id", "ticket_id", "action_id"):
        click.echo(f"{key:<10} {'' if data[key] is None else data[key]}".rstrip())
    click.echo(f"{'prev_hash':<10} {data['prev_hash']}")
    click.echo(f"{'hash':<10} {data['hash']}")
    click.echo("payload")
    click.echo(json.dumps(data["payload"], ensure_ascii=False, indent=2, sort_keys=True))


@audit.command("verify")
@db_option
def audit_verify() -> None:
    """Recompute every hash; exit 1 naming the first row that was changed, removed or reordered."""
    result = _audit_log().verify()
    if result.ok:
        click.echo(f"audit chain ok: {result.rows} rows")
        return
    click.echo(f"audit chain broken: {result.reason}")
    sys.exit(1)
