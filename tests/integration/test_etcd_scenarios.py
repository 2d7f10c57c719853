"""Every etcd scenario, run headless with the rules brain in auto mode as a real
`operator-console run` process (two at a time): the expected invariant fires after the fault,
the expected action is verified (or, for the partition, nothing runs and a person is told), the
run ends within 60 s and the write ledger never lost an acknowledged write."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.integration.conftest import Timeline, console_argv, console_env, parse_timeline
from tests.subjects.etcd.conftest import etcd_or_skip

# The module's first test waits for all seven runs.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

# scenario -> (invariant, target or None, action or None)
EXPECTED: dict[str, tuple[str | None, str | None, str | None]] = {
    "etcd-leader-kill": ("member_down", None, "restart_member"),
    "etcd-member-pause": ("member_down", "member-2", "resume_member"),
    "etcd-quorum-loss": ("quorum_lost", "cluster", "restart_member"),
    "etcd-nospace": ("nospace_alarm", "cluster", "recover_nospace"),
    "etcd-partition": ("no_leader", "member-3", None),
    "etcd-slow-leader": ("slow_member", None, "move_leader"),
    "etcd-healthy": (None, None, None),
}
PARALLEL = 2  # each run is three etcd members and a console on a 2-core machine
TIME_LIMIT_S = 60.0


def _run(scenario: str, data_dir: Path) -> Timeline:
    argv = console_argv(
        "run", scenario, "--headless", "--quiet", "--mode", "auto", "--brain", "rules"
    )
    proc = subprocess.run(
        argv, env=console_env(data_dir), capture_output=True, text=True, timeout=150
    )
    return Timeline(proc.returncode, parse_timeline(proc.stdout), proc.stderr)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Timeline]:
    etcd_or_skip()
    root = tmp_path_factory.mktemp("etcd-scenarios")
    with ThreadPoolExecutor(PARALLEL) as pool:
        futures = {name: pool.submit(_run, name, root / name) for name in EXPECTED}
        return {name: future.result() for name, future in futures.items()}


def _pids(timeline: Timeline) -> list[int]:
    members = timeline.first("cluster_ready")["endpoints"]["members"]
    return [int(m["pid"]) for m in members.values() if m.get("pid")]


def lost_writes(timeline: Timeline) -> tuple[float | None, float]:
    """The last ledger check the clients reported, and the most writes it ever checked."""
    samples = [e for e in timeline.named("workload_sample") if e.get("lost_writes") is not None]
    assert samples, "no sample carried a ledger check"
    return samples[-1]["lost_writes"], max(e["checked_writes"] or 0 for e in samples)


@pytest.mark.parametrize("scenario", sorted(EXPECTED))
def test_each_etcd_scenario_passes_in_time_with_no_lost_write(
    runs: dict[str, Timeline], scenario: str
) -> None:
    timeline = runs[scenario]
    assert timeline.returncode == 0, timeline.story() + "\n" + timeline.stderr[-2000:]
    finished = timeline.first("run_finished")
    summary: dict[str, Any] = finished["summary"]
    assert finished["ok"] is True and summary["problems"] == []
    assert summary["brain"] == "rules"
    assert summary["duration_s"] <= TIME_LIMIT_S, summary["duration_s"]
    # No acknowledged write went missing: the invariant never fired, and the ledger's last
    # check (of every settled key) found none.
    assert "lost_writes" not in summary["fired"]
    lost, checked = lost_writes(timeline)
    assert lost == 0 and checked > 0
    # The final read-back, after the clients stopped, is the run's ground truth.
    truth = summary["ground_truth"]
    assert truth["lost_writes"] == 0, truth
    assert 0 < truth["checked_writes"] <= truth["acknowledged_writes"], truth
    invariant, target, action = EXPECTED[scenario]
    actions = [a["action"] for a in summary["actions"]]
    if invariant is None:
        assert summary["tickets_opened"] == 0 and summary["fired"] == []
        assert timeline.named("action_proposed") == []
        return
    injected = timeline.first("fault_injected")
    fields = {"invariant": invariant, **({"target": target} if target else {})}
    opened = timeline.first("ticket_opened", **fields)
    assert opened["t"] > injected["t"]
    if action is None:
        # Restraint: the partition is named, nothing runs, a person is told why.
        assert timeline.named("action_proposed") == [] and actions == [], timeline.story()
        diagnosis = timeline.first("diagnosis_ready", ticket_id=opened["ticket_id"])
        assert "cut off from its peers" in diagnosis["root_cause"]
        assert diagnosis["recommended"] == []
        escalated = timeline.first("ticket_escalated", ticket_id=opened["ticket_id"])
        assert "network" in escalated["reason"] and "restart" in escalated["reason"]
        return
    verified = timeline.first("action_verified", action=action)
    resolved = timeline.first("ticket_resolved", ticket_id=verified["ticket_id"])
    assert resolved["by"] == "agent"
    assert summary["recovered"] is True


def test_the_leader_kill_is_detected_at_once_and_names_the_old_leader(
    runs: dict[str, Timeline],
) -> None:
    timeline = runs["etcd-leader-kill"]
    injected = timeline.first("fault_injected")
    opened = timeline.first("ticket_opened", invariant="member_down", target=injected["target"])
    # The monitor ticks once a second; benchmarks/detection.py measures the real figure.
    assert opened["t"] - injected["t"] < 3.0


def test_no_scenario_leaves_a_member_running(runs: dict[str, Timeline]) -> None:
    alive = [
        pid
        for timeline in runs.values()
        for pid in _pids(timeline)
        if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    ]
    assert alive == []


def test_without_an_etcd_binary_the_run_fails_in_one_clear_line(tmp_path: Path) -> None:
    env = {**console_env(tmp_path / "data"), "OPERATOR_CONSOLE_ETCD_BIN": str(tmp_path / "none")}
    proc = subprocess.run(
        console_argv("run", "etcd-healthy", "--headless", "--brain", "rules"),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    [problem] = parse_timeline(proc.stdout)[-1]["summary"]["problems"]
    assert "\n" not in problem
    assert "apt-get install etcd-server" in problem
    assert "pip install 'operator-console[etcd]'" in problem
