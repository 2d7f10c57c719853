"""No process the console starts outlives it: not after a normal run, not after Ctrl+C (SIGINT),
not after `lab down`."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest

from tests.integration.conftest import console_argv, console_env


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _survivors(procs: list[psutil.Process], timeout: float = 5.0) -> list[psutil.Process]:
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    return [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


class _Timeline:
    """Reads the run's stdout on a thread, so the run never blocks on a full pipe."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.events: queue.Queue[dict] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(proc,), daemon=True)
        self._thread.start()

    def _pump(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.events.put(json.loads(line))

    def until(self, event: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                data = self.events.get(timeout=left)
            except queue.Empty:
                break
            if data["event"] == event:
                return data
        raise AssertionError(f"{event} never came")


def _why_stuck(proc: subprocess.Popen[str], data_dir: Path) -> str:
    """Ask the console for its threads' stacks (SIGUSR1) and return them with its log's tail."""
    proc.send_signal(signal.SIGUSR1)  # every thread's stack
    proc.send_signal(signal.SIGUSR2)  # every asyncio task's stack, into the log
    time.sleep(1.0)
    logs = data_dir / "logs"
    parts = []
    for name in ("stacks.log", "operator-console.log"):
        path = logs / name
        if path.exists():
            parts.append(f"--- {name} ---\n" + "\n".join(path.read_text().splitlines()[-200:]))
    return "\n".join(parts)


@pytest.mark.integration
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_mid_run_stops_every_child(tmp_path: Path, signum: signal.Signals) -> None:
    data_dir = tmp_path / "data"
    proc = subprocess.Popen(
        console_argv(
            "run",
            "ratelimiter-node-kill",
            "--headless",
            "--quiet",
            "--pace",
            "0.5",
        ),
        env=console_env(data_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        timeline = _Timeline(proc)
        ready = timeline.until("cluster_ready")
        children = _descendants(proc.pid)
        assert ready["endpoints"]["store"]["pid"] in {p.pid for p in children}
        # the store, the link proxies, three nodes and the clients
        assert len(children) == 6, children
        timeline.until("fault_injected")
        proc.send_signal(signum)
        try:
            proc.wait(timeout=45)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"the run did not stop within 45 s of {signum.name}\n" + _why_stuck(proc, data_dir)
            ) from None
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signum
    assert _survivors(children) == []
    assert f"{signum.name}: every process of the run was stopped" in (
        proc.stderr.read() if proc.stderr else ""
    )


@pytest.mark.integration
def test_lab_up_status_down_leaves_nothing(tmp_path: Path) -> None:
    env = console_env(tmp_path / "data")
    up = subprocess.Popen(
        console_argv("lab", "up", "--subject", "ratelimiter", "--size", "2"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        state_file = tmp_path / "data" / "lab.json"
        deadline = time.monotonic() + 30
        while not state_file.exists() and time.monotonic() < deadline:
            assert up.poll() is None, up.stderr.read() if up.stderr else ""
            time.sleep(0.1)
        endpoints = json.loads(state_file.read_text())["endpoints"]
        assert set(endpoints["nodes"]) == {"node-1", "node-2"}
        children = _descendants(up.pid)
        status = subprocess.run(
            console_argv("lab", "status"),
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert status.returncode == 0
        assert status.stdout.count(" running ") == 3, status.stdout  # two nodes and the store
        assert status.stdout.count(" answers ") == 2, status.stdout
        down = subprocess.run(
            console_argv("lab", "down"),
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert down.returncode == 0, down.stderr
        up.wait(timeout=15)
    finally:
        if up.poll() is None:
            up.kill()
    assert _survivors(children) == []
    assert not state_file.exists()
