"""The console in a real terminal (tmux): pick a scenario, quit with q, and the shell is usable
again with no child process left behind."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

from operator_console.scenarios.catalog import scenario_files

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
]


def _tmux(*args: str) -> str:
    return subprocess.run(
        ["tmux", *args], capture_output=True, text=True, check=True, timeout=10
    ).stdout


def _wait_for(session: str, text: str, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = _tmux("capture-pane", "-p", "-t", session)
        if text in screen:
            return screen
        time.sleep(0.3)
    raise AssertionError(f"{text!r} never appeared; screen:\n{screen}")


def _assert_shell_back_and_no_child(
    session: str, shell_pid: int, children: list[psutil.Process], *, gone: str
) -> None:
    """The console has exited: the shell answers, its screen is gone, no child survives."""
    deadline = time.monotonic() + 30
    while psutil.Process(shell_pid).children() and time.monotonic() < deadline:
        time.sleep(0.2)
    _tmux("send-keys", "-t", session, "echo shell-back-$((40+2))", "Enter")
    screen = _wait_for(session, "shell-back-42", timeout=15)
    assert gone not in screen  # the alternate screen is gone
    _, alive = psutil.wait_procs(children, timeout=10)
    assert [p for p in alive if p.status() != psutil.STATUS_ZOMBIE] == []


def test_pick_then_quit_restores_the_shell_and_leaves_no_child(tmp_path: Path) -> None:
    session = f"oc-{uuid.uuid4().hex[:8]}"
    console = Path(sys.executable).with_name("operator-console")
    env = f"OPERATOR_CONSOLE_DATA_DIR={tmp_path / 'data'}"
    _tmux("new-session", "-d", "-s", session, "-x", "160", "-y", "45", "bash --norc --noprofile")
    try:
        shell_pid = int(_tmux("display-message", "-p", "-t", session, "#{pane_pid}").strip())
        _tmux("send-keys", "-t", session, f"env {env} {console}", "Enter")
        _wait_for(session, "Pick a scenario")
        # The rate limiter's node-kill, wherever the other subjects' scenarios put it.
        downs = list(scenario_files()).index("ratelimiter-node-kill")
        _tmux("send-keys", "-t", session, *(["Down"] * downs), "Enter")
        try:
            _wait_for(session, "Cluster", timeout=20)
        except AssertionError:
            # Keys typed during the very first paint can land before the table has focus;
            # any scenario will do for this test, so pick again.
            _tmux("send-keys", "-t", session, "Enter")
            _wait_for(session, "Cluster")
        _wait_for(session, "node-3")
        children = psutil.Process(shell_pid).children(recursive=True)
        assert len(children) >= 5, children  # the console, the store and three nodes
        _tmux("send-keys", "-t", session, "q")
        _assert_shell_back_and_no_child(session, shell_pid, children, gone="Pick a scenario")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True, timeout=10)


def _start_a_run(session: str, tmp_path: Path) -> tuple[int, list[psutil.Process]]:
    """Open the console in a fresh tmux session and start node-kill; the shell's pid and the
    console's process tree once the cluster is up."""
    console = Path(sys.executable).with_name("operator-console")
    env = f"OPERATOR_CONSOLE_DATA_DIR={tmp_path / 'data'}"
    _tmux("new-session", "-d", "-s", session, "-x", "160", "-y", "45", "bash --norc --noprofile")
    shell_pid = int(_tmux("display-message", "-p", "-t", session, "#{pane_pid}").strip())
    _tmux("send-keys", "-t", session, f"env {env} {console} run ratelimiter-node-kill", "Enter")
    _wait_for(session, "node-3")
    children = psutil.Process(shell_pid).children(recursive=True)
    assert len(children) >= 5, children  # the console, the store and three nodes
    return shell_pid, children


def test_ctrl_c_mid_run_restores_the_shell_and_leaves_no_child(tmp_path: Path) -> None:
    session = f"oc-{uuid.uuid4().hex[:8]}"
    try:
        shell_pid, children = _start_a_run(session, tmp_path)
        _tmux("send-keys", "-t", session, "C-c")
        _assert_shell_back_and_no_child(session, shell_pid, children, gone="Cluster")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True, timeout=10)


def test_closing_the_terminal_mid_run_leaves_no_child(tmp_path: Path) -> None:
    """The terminal goes away (SIGHUP to everything in it): the cluster goes with the console."""
    session = f"oc-{uuid.uuid4().hex[:8]}"
    try:
        _, children = _start_a_run(session, tmp_path)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True, timeout=10)
    _, alive = psutil.wait_procs(children, timeout=15)
    assert [p for p in alive if p.status() != psutil.STATUS_ZOMBIE] == []
