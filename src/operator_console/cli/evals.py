"""`operator-console eval`: scenarios run many times per brain, scored, stored and compared."""

from __future__ import annotations

import asyncio
import csv
import json
import signal
import sys
from pathlib import Path
from typing import Any

import click

from operator_console.cli.context import FilePath, cli_context, db_option
from operator_console.db.evals import EvalRepository

COMPARED = ("win_rate", "ttd_median", "ttm_median", "wrong_actions", "tickets")
LOWER_IS_BETTER = {"ttd_median", "ttm_median", "wrong_actions", "tickets"}


class _DefaultGroup(click.Group):
    """`eval [CAMPAIGN] [options]` runs a campaign; `eval compare|list` are subcommands."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("-h", "--help")):
            args = ["run", *args]
        return super().parse_args(ctx, args)


@click.group("eval", cls=_DefaultGroup)
def evals() -> None:
    """Score the operator over many runs: `eval [CAMPAIGN.toml] [options]`, `eval compare A B`,
    `eval list`."""


def _split(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _charts(cells: list[dict[str, Any]]) -> str:
    """TTD and TTM medians by scenario and brain, as terminal bar charts."""
    import plotext as plt

    scenarios = list(dict.fromkeys(c["scenario"] for c in cells))
    brains = list(dict.fromkeys(c["brain"] for c in cells))
    short = [s.split("-", 1)[-1][:14] for s in scenarios]
    out = []
    charts = (("ttd_median", "time to detect (s, median)"), ("ttm_median", "time to mitigate (s)"))
    for key, title in charts:
        values = [
            [
                next((c[key] or 0.0 for c in cells if c["scenario"] == s and c["brain"] == b), 0.0)
                for s in scenarios
            ]
            for b in brains
        ]
        plt.clear_figure()
        plt.plotsize(min(100, 14 * len(scenarios) + 20), 14)
        plt.multiple_bar(short, values, labels=brains)
        plt.title(title)
        out.append(plt.build())
    return "\n".join(out)


@evals.command("run")
@click.argument("campaign_file", required=False, type=FilePath())
@click.option("--scenarios", help="Scenario names or paths, comma separated.")
@click.option("--brain", "brains", help="Brains, comma separated: none, rules, claude.")
@click.option("--trials", type=click.IntRange(1, 1000), help="Trials per scenario and brain.")
@click.option("--parallel", type=click.IntRange(1, 16), help="Labs side by side.")
@click.option("--mode", type=click.Choice(["observe", "approve", "auto"]), help="Default auto.")
@click.option("--seed", type=int, help="Workload seed (plus the trial number).")
@click.option("--pace", type=click.FloatRange(0.05, 10), help="Scale chapter timings.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per run on stdout.")
@click.option("--csv", "csv_file", type=FilePath())
@click.option("--no-charts", is_flag=True, help="No TTD/TTM charts on stderr.")
@db_option
def eval_run(
    campaign_file: Path | None,
    scenarios: str | None,
    brains: str | None,
    trials: int | None,
    parallel: int | None,
    mode: str | None,
    seed: int | None,
    pace: float | None,
    as_json: bool,
    csv_file: Path | None,
    no_charts: bool,
) -> None:
    """Run a campaign: every scenario, every brain, every trial, each a fresh headless run."""
    from operator_console.scenarios.campaign import CampaignError, campaign_from, load_campaign
    from operator_console.scenarios.scoring import render_detection, render_table

    overrides: dict[str, Any] = {
        "scenarios": _split(scenarios),
        "brains": _split(brains),
        "trials": trials,
        "parallel": parallel,
        "mode": mode,
        "seed": seed,
        "pace": pace,
    }
    try:
        if campaign_file is not None:
            campaign = load_campaign(campaign_file, **overrides)
        else:
            if not overrides["scenarios"]:
                raise CampaignError("give a CAMPAIGN file or --scenarios A,B")
            campaign = campaign_from(
                {k: v for k, v in overrides.items() if v is not None}, where="command line"
            )
    except CampaignError as exc:
        raise click.ClickException(str(exc)) from None
    context = cli_context()
    settings = context.settings
    if "claude" in campaign.brains and not (
        settings.anthropic_api_key or settings.anthropic_base_url
    ):
        raise click.ClickException(
            "--brain claude needs ANTHROPIC_API_KEY (or ANTHROPIC_BASE_URL); drop it or set one"
        )
    context.setup_logging()
    engine = context.engine

    from operator_console.scenarios.campaign import CampaignRunner

    def on_score(score: Any) -> None:
        data = score.to_dict()
        if as_json:
            click.echo(json.dumps(data, default=str))
        verdict = "win" if score.win else "LOSS"
        ttd = "-" if score.ttd_s is None else f"{score.ttd_s:.2f}s"
        ttm = "-" if score.ttm_s is None else f"{score.ttm_s:.2f}s"
        click.echo(
            f"{score.scenario} {score.brain} #{score.trial}: {verdict} (ttd {ttd}, ttm {ttm}, "
            f"wrong {score.wrong_actions}, tickets {score.tickets:g})",
            err=True,
        )

    runner = CampaignRunner(campaign, settings, engine, on_score=on_score)
    total = len(runner.trials())
    click.echo(
        f"campaign {runner.result.campaign_id}: {total} run(s), {campaign.parallel} at a time",
        err=True,
    )
    interrupted = _run_until_signal(runner)
    result = runner.result
    from operator_console.scenarios.scoring import table

    cells = table(result.scores)
    click.echo(render_table(cells), err=True)
    click.echo(render_detection(result.scores), err=True)
    if cells and not no_charts:
        click.echo(_charts([c.to_dict() for c in cells]), err=True)
    if csv_file is not None:
        rows = [s.to_dict() for s in result.scores]
        with csv_file.open("w", newline="") as handle:
            if rows:
                writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
    done = f"{len(result.scores)} of {total} run(s) scored; campaign {result.campaign_id}"
    if interrupted:
        click.echo(f"interrupted: {done} (kept)", err=True)
        sys.exit(130)
    click.echo(done, err=True)


def _run_until_signal(runner: Any) -> bool:
    """Run the campaign; SIGINT or SIGTERM stops it cleanly (every lab stopped) and keeps what
    finished. True when it was interrupted."""

    async def main() -> bool:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        stopped: list[int] = []

        def stop(signum: int) -> None:
            if not stopped:
                task.cancel()
            stopped.append(signum)

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop, sig)
        try:
            await runner.run()
        except asyncio.CancelledError:
            if stopped:
                return True
            raise
        return False

    return asyncio.run(main())


@evals.command("list")
@db_option
def eval_list() -> None:
    """Campaigns, newest first."""
    rows = EvalRepository(cli_context().existing_engine).campaigns()
    if not rows:
        click.echo("no campaigns; run one with `operator-console eval --scenarios A,B`")
        return
    click.echo(f"{'CAMPAIGN':<44} {'RUNS':>5} {'WINS':>5}  SCENARIOS")
    for row in rows:
        runs = sum(int(c.get("runs", 0)) for c in row.cells)
        wins = sum(int(c.get("wins", 0)) for c in row.cells)
        state = " (interrupted)" if row.interrupted else ""
        names = ", ".join(row.spec.get("scenarios", []))
        click.echo(f"{row.id:<44} {runs:>5} {wins:>5}  {names}{state}")


@evals.command("compare")
@click.argument("before")
@click.argument("after")
@db_option
def eval_compare(before: str, after: str) -> None:
    """What got better and worse from campaign BEFORE to AFTER (ids or names); exit 1 when a
    win rate fell."""
    repo = EvalRepository(cli_context().existing_engine)
    found = {name: repo.find(name) for name in (before, after)}
    for name, row in found.items():
        if row is None:
            raise click.ClickException(f"no campaign {name!r}; see `operator-console eval list`")
    a, b = found[before], found[after]
    assert a is not None and b is not None
    old = {(c["scenario"], c["brain"]): c for c in a.cells}
    regressed = False
    click.echo(f"{a.id} -> {b.id}")
    for cell in b.cells:
        key = (cell["scenario"], cell["brain"])
        prior = old.get(key)
        if prior is None:
            click.echo(f"  {key[0]} {key[1]}: new")
            continue
        notes = []
        for field in COMPARED:
            x, y = prior.get(field), cell.get(field)
            if x is None or y is None or x == y:
                continue
            better = (y < x) if field in LOWER_IS_BETTER else (y > x)
            notes.append(f"{field} {x} -> {y} ({'better' if better else 'worse'})")
            if field == "win_rate" and not better:
                regressed = True
        click.echo(f"  {key[0]} {key[1]}: {'; '.join(notes) or 'unchanged'}")
    if regressed:
        click.echo("a win rate fell", err=True)
        sys.exit(1)
