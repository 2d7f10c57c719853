"""Command line: no arguments opens the console; subcommands run scenarios headless and more."""

from __future__ import annotations

import click

from operator_console.audit import register_secrets_from_env
from operator_console.cli.actions import actions, kill_switch, mode
from operator_console.cli.audit import audit
from operator_console.cli.context import CliContext
from operator_console.cli.evals import evals
from operator_console.cli.lab import lab
from operator_console.cli.records import scenarios, tickets
from operator_console.cli.run import run, watch
from operator_console.cli.serve import serve


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="operator-console")
@click.pass_context
def main(ctx: click.Context) -> None:
    """An AI operations console: watch a distributed system, catch faults, prove the fix."""
    register_secrets_from_env()
    context = ctx.ensure_object(CliContext)
    if ctx.invoked_subcommand is None:
        from operator_console.tui.app import OperatorApp

        context.setup_logging()
        OperatorApp(settings=context.settings, engine=context.engine).run()


for command in (
    run,
    watch,
    evals,
    scenarios,
    tickets,
    lab,
    actions,
    kill_switch,
    mode,
    audit,
    serve,
):
    main.add_command(command)

__all__ = ["main"]
