"""Runs end truthfully: a rejected fix goes back to the agent with the person's reason, a run that
waits for a person says so and stops at a stated limit, and open tickets end abandoned."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import Timeline, console_argv, console_env, parse_timeline

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _store_pause(tmp_path: Path, recover_timeout: float) -> Path:
    """The bundled store-pause scenario, as a file of its own with a shorter recovery wait."""
    text = (ROOT / "scenarios" / "ratelimiter-store-pause.toml").read_text()
    copy = tmp_path / "store-pause.toml"
    copy.write_text(text + f"recover_timeout = {recover_timeout}\n")
    return copy


def _run(args: list[str], env: dict[str, str], on_line=None):  # type: ignore[no-untyped-def]
    run = subprocess.Popen(
        console_argv(*args), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    lines: list[str] = []
    try:
        assert run.stdout is not None
        for line in run.stdout:
            lines.append(line)
            if on_line is not None:
                on_line(json.loads(line))
        stderr = run.stderr.read() if run.stderr else ""
        run.wait(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
    return Timeline(run.returncode, parse_timeline("".join(lines)), stderr)


def test_a_rejected_fix_goes_back_to_the_agent_which_hands_the_ticket_to_the_person(
    tmp_path: Path,
) -> None:
    env = console_env(tmp_path / "data")
    scenario = _store_pause(tmp_path, recover_timeout=8)
    rejected: list[int] = []

    def on_line(event: dict) -> None:  # type: ignore[type-arg]
        if event["event"] == "action_proposed" and not rejected:
            rejected.append(event["action_id"])
            result = subprocess.run(
                console_argv(
                    "actions", "reject", str(event["action_id"]), "--reason", "not during the demo"
                ),
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert result.returncode == 0, result.stderr

    timeline = _run(
        [
            "run",
            str(scenario),
            "--headless",
            "--mode",
            "approve",
            "--brain",
            "rules",
            "--pace",
            "0.5",
        ],
        env,
        on_line,
    )
    assert rejected, timeline.story()
    proposed = timeline.first("action_proposed", action_id=rejected[0])
    assert proposed["action"] == "resume_store" and proposed["decision"] == "await_approval"
    ticket_id = proposed["ticket_id"]
    rejection = timeline.first("action_rejected", action_id=rejected[0])
    assert rejection["by"] == "person:cli" and rejection["reason"] == "not during the demo"
    # The agent looked again, knowing the person's answer, and gave the ticket to the person.
    starts = [e for e in timeline.named("agent_started") if e["ticket_id"] == ticket_id]
    assert len(starts) == 2, timeline.story()
    assert starts[1]["t"] > rejection["t"]
    escalated = timeline.first("ticket_escalated", ticket_id=ticket_id)
    assert "rejected resume_store" in escalated["reason"]
    assert "not during the demo" in escalated["reason"]
    assert len(timeline.named("action_proposed")) == 1  # never the same fix again
    # The run said what it waited for, then ended at the stated limit, saying why.
    waiting = timeline.named("waiting_for_recovery")
    assert waiting and "escalated" in waiting[-1]["why"], timeline.story()
    finished = timeline.first("run_finished")
    assert finished["ok"] is False and timeline.returncode == 1
    problems = " ".join(finished["summary"]["problems"])
    assert "within 8 s" in problems and "rejected resume_store" in problems
    assert f"#{ticket_id} store_unreachable on store" in finished["summary"]["abandoned"]
    abandoned = timeline.first("ticket_abandoned", ticket_id=ticket_id)
    assert "the run ended" in abandoned["reason"]
    assert finished["summary"]["duration_s"] < 60


def test_a_run_waiting_for_a_person_says_so_and_stops_at_its_limit(tmp_path: Path) -> None:
    env = {**console_env(tmp_path / "data"), "OPERATOR_CONSOLE_APPROVAL_WAIT_S": "6"}
    timeline = _run(
        [
            "run",
            "ratelimiter-node-kill",
            "--headless",
            "--quiet",
            "--mode",
            "approve",
            "--brain",
            "rules",
            "--pace",
            "0.5",
        ],
        env,
    )
    proposed = timeline.first("action_proposed", action="restart_node")
    waiting = [
        e for e in timeline.named("waiting_for_person") if e["action_id"] == proposed["action_id"]
    ]
    assert len(waiting) >= 2, timeline.story()  # every few seconds
    assert waiting[0]["command"] == f"operator-console actions approve {proposed['action_id']}"
    assert waiting[-1]["limit_s"] == 6
    finished = timeline.first("run_finished")
    assert finished["ok"] is False and timeline.returncode == 1
    (problem,) = [p for p in finished["summary"]["problems"] if p.startswith("waited")]
    assert problem == (
        f"waited 6 s for a person to decide action #{proposed['action_id']} restart_node "
        "{'node': 'node-2'}; nobody did"
    )
    listed = subprocess.run(
        console_argv("tickets", "list", "--json"), env=env, capture_output=True, text=True
    )
    (ticket,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert ticket["state"] == "abandoned" and "the run ended" in ticket["closed_reason"]
