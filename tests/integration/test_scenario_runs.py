"""Each shipped scenario, run headless against a real cluster: the expected invariant fires on the
expected target after the fault, the operator's action is verified and resolves the ticket (or,
without an agent, the scenario's own cleanup does), and nothing is left running."""

from __future__ import annotations

from datetime import datetime

import psutil
import pytest

from tests.integration.conftest import Timeline

EXPECTED = {
    "ratelimiter-node-kill": ("node_down", "node-2", "restart_node"),
    "ratelimiter-store-pause": ("store_unreachable", "store", "resume_store"),
    "ratelimiter-clock-skew": ("over_limit", "user:hot", "clear_failpoint"),
    "ratelimiter-config-drift": ("config_drift", "node-2", "clear_failpoint"),
    "ratelimiter-link-latency": ("store_link_slow", "node-1", "drain_node"),
}

CONTRACT_FIELDS = {
    "workload_sample": {"offered", "allowed", "denied", "errors", "p50_ms", "p99_ms"},
    "ticket_opened": {"ticket_id", "invariant", "target", "message"},
    "fault_injected": {"kind", "target", "description"},
    "run_finished": {"ok", "summary"},
}


def assert_timeline_contract(timeline: Timeline) -> None:
    assert timeline.events[0]["event"] == "run_started"
    assert timeline.events[-1]["event"] == "run_finished"
    last_t = -1.0
    for event in timeline.events:
        assert isinstance(event["t"], float | int) and event["t"] >= last_t
        last_t = event["t"]
        assert datetime.fromisoformat(event["at"]).utcoffset() is not None
        missing = CONTRACT_FIELDS.get(event["event"], set()) - set(event)
        assert not missing, f"{event['event']} lacks {missing}"
    assert len(timeline.named("workload_sample")) >= 5
    assert timeline.named("chapter_entered")


def assert_no_survivors(timeline: Timeline) -> None:
    alive = [pid for pid in timeline.pids() if psutil.pid_exists(pid)]
    alive = [p for p in alive if psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert alive == [], f"processes left running: {alive}"


@pytest.mark.integration
@pytest.mark.parametrize("scenario", sorted(EXPECTED))
def test_agent_in_auto_mode_fixes_each_fault(run_console, scenario: str) -> None:  # type: ignore[no-untyped-def]
    invariant, target, action = EXPECTED[scenario]
    timeline = run_console(
        "run",
        scenario,
        "--headless",
        "--quiet",
        "--pace",
        "0.3",
        "--mode",
        "auto",
    )
    assert timeline.returncode == 0, timeline.story()
    assert_timeline_contract(timeline)
    assert timeline.first("agent_ready")["brain"] == "rules"
    injected = timeline.first("fault_injected")
    # A slow link may show first as a slow ping or, on a loaded machine, as an unreachable store.
    invariants = (
        ("store_link_slow", "store_unreachable") if invariant == "store_link_slow" else (invariant,)
    )
    opened = next(
        (
            e
            for e in timeline.named("ticket_opened")
            if e["invariant"] in invariants and e["target"] == target
        ),
        None,
    )
    assert opened is not None, timeline.story()
    assert opened["t"] > injected["t"]
    # The same fault may open a sibling ticket first (a slow link can also fail the node's
    # store ping); what matters is that the right action was chosen, ran and was verified, and
    # that the expected ticket ends resolved after it.
    recommended = [r["action"] for e in timeline.named("diagnosis_ready") for r in e["recommended"]]
    assert action in recommended
    verified = timeline.first("action_verified", action=action)
    executed = timeline.first("action_executing", action_id=verified["action_id"])
    resolved = timeline.first("ticket_resolved", ticket_id=opened["ticket_id"])
    assert resolved["t"] > executed["t"]
    if verified["ticket_id"] == opened["ticket_id"]:
        assert resolved["by"] == "agent"
    if scenario == "ratelimiter-link-latency":
        # A drain mitigates; only the scenario's repair of the link removes the cause.
        timeline.first("ticket_mitigated", ticket_id=opened["ticket_id"])
        assert [e["by"] for e in timeline.named("fault_cleared")] == ["scenario"]
    else:
        assert timeline.named("fault_cleared") == [], "the operator fixed it, not the scenario"
    finished = timeline.named("run_finished")[0]
    assert finished["ok"] is True and finished["summary"]["recovered"] is True
    assert_no_survivors(timeline)


@pytest.mark.integration
def test_without_agent_the_scenario_clears_its_own_fault(run_console) -> None:  # type: ignore[no-untyped-def]
    timeline = run_console(
        "run", "ratelimiter-node-kill", "--headless", "--quiet", "--pace", "0.3", "--no-agent"
    )
    assert timeline.returncode == 0, timeline.stderr
    assert_timeline_contract(timeline)
    assert timeline.named("agent_ready") == []
    injected = timeline.first("fault_injected")
    opened = timeline.first("ticket_opened", invariant="node_down", target="node-2")
    assert opened["t"] > injected["t"]
    cleared = timeline.first("fault_cleared", by="scenario")
    resolved = timeline.first("ticket_resolved", ticket_id=opened["ticket_id"])
    assert resolved["t"] > cleared["t"] and resolved["by"] == "monitor"
    assert timeline.named("action_proposed") == []
    # The headless run keeps the same scoreboard the console shows: one incident, detected
    # and cleared (by the scenario, with no action) as many seconds after the fault.
    (incident,) = timeline.named("run_finished")[0]["summary"]["incidents"]
    assert incident["tickets"] == [opened["ticket_id"]]
    assert incident["fault"] == f"{injected['kind']} on {injected['target']}"
    assert incident["detected_s"] == pytest.approx(opened["t"] - injected["t"], abs=0.002)
    assert incident["resolved_s"] == pytest.approx(resolved["t"] - injected["t"], abs=0.002)
    assert (incident["fixed_s"], incident["diagnosed_s"], incident["state"]) == (
        None,
        None,
        "resolved",
    )
    assert_no_survivors(timeline)


@pytest.mark.integration
def test_healthy_burst_fires_nothing(run_console) -> None:  # type: ignore[no-untyped-def]
    timeline = run_console(
        "run",
        "ratelimiter-healthy-burst",
        "--headless",
        "--quiet",
        "--mode",
        "auto",
        "--pace",
        "0.35",
    )
    assert_timeline_contract(timeline)
    assert timeline.named("violation_detected") == [], timeline.stderr
    assert timeline.named("ticket_opened") == []
    assert timeline.named("action_proposed") == []
    samples = timeline.named("workload_sample")
    assert max(s["denied"] for s in samples) > 0, "the surge must really hit the limit"
    assert timeline.returncode == 0, timeline.stderr
    assert_no_survivors(timeline)


@pytest.mark.integration
def test_approve_mode_waits_for_a_person_in_another_process(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json
    import subprocess

    from tests.integration.conftest import console_argv, console_env, parse_timeline

    env = console_env(tmp_path / "data")
    run = subprocess.Popen(
        console_argv(
            "run",
            "ratelimiter-node-kill",
            "--headless",
            "--quiet",
            "--pace",
            "0.5",
            "--mode",
            "approve",
        ),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    try:
        assert run.stdout is not None
        needed = None
        for line in run.stdout:
            lines.append(line)
            event = json.loads(line)
            if event["event"] == "action_executing":
                raise AssertionError("an action ran before anybody approved it")
            if event["event"] == "action_proposed":
                assert event["decision"] == "await_approval", event
                assert event["why"] == "approve mode: every action waits for a person"
                needed = event
                break
        assert needed is not None and needed["action"] == "restart_node"
        approve = subprocess.run(
            console_argv("actions", "approve", str(needed["action_id"])),
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert approve.returncode == 0, approve.stderr
        rest, _ = run.communicate(timeout=120)
        lines.append(rest)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0
    timeline = Timeline(run.returncode, parse_timeline("".join(lines)), "")
    approved = timeline.first("action_approved", action_id=needed["action_id"])
    assert approved["by"] == "person:cli"
    timeline.first("action_verified", action="restart_node")
    resolved = timeline.first("ticket_resolved", ticket_id=needed["ticket_id"])
    assert resolved["by"] == "agent"
    assert_no_survivors(timeline)
