"""The console in a real terminal (tmux): time to first paint, then its CPU use over 30 s of a
running scenario (the app's own process; the cluster's processes are reported apart).

    python benchmarks/console.py [--seconds 30] [--scenario ratelimiter-node-kill]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil

from operator_console.scenarios.catalog import scenario_files


def tmux(*args: str) -> str:
    return subprocess.run(
        ["tmux", *args], capture_output=True, text=True, check=True, timeout=10
    ).stdout


def wait_for(session: str, text: str, timeout: float = 60.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if text in tmux("capture-pane", "-p", "-t", session):
            return time.monotonic() - started
        time.sleep(0.02)
    raise SystemExit(f"{text!r} did not appear within {timeout:g} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--scenario", default="ratelimiter-node-kill", help="which to run")
    args = parser.parse_args()
    console = Path(sys.executable).with_name("operator-console")
    session = f"bench-{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory() as data_dir:
        tmux("new-session", "-d", "-s", session, "-x", "160", "-y", "45", "bash --norc")
        try:
            shell = psutil.Process(int(tmux("display-message", "-p", "-t", session, "#{pane_pid}")))
            tmux("send-keys", "-t", session, f"OPERATOR_CONSOLE_DATA_DIR={data_dir} {console}")
            tmux("send-keys", "-t", session, "Enter")
            first_paint = wait_for(session, "Pick a scenario")
            print(f"time to first paint: {first_paint:.2f} s (command to picker on screen)")
            row = list(scenario_files()).index(args.scenario)  # the picker lists them sorted
            tmux("send-keys", "-t", session, *(["Down"] * row), "Enter")
            wait_for(session, "Cluster")
            time.sleep(3)  # cluster up, workload flowing
            app = shell.children()[0]
            cluster = app.children(recursive=True)
            before = app.cpu_times()
            before_cluster = sum(sum(p.cpu_times()[:2]) for p in cluster)
            tmux("send-keys", "-t", session, "Space")  # the fault chapter: detection, agent
            time.sleep(args.seconds)
            after = app.cpu_times()
            after_cluster = sum(sum(p.cpu_times()[:2]) for p in cluster if p.is_running())
            used = (after.user + after.system) - (before.user + before.system)
            print(
                f"console process CPU over {args.seconds:g} s of a running scenario: "
                f"{used / args.seconds:.1%} of one core"
            )
            print(
                f"cluster processes (store, nodes) over the same time: "
                f"{(after_cluster - before_cluster) / args.seconds:.1%} of one core"
            )
            tmux("send-keys", "-t", session, "q")
            time.sleep(5)
        finally:
            subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


if __name__ == "__main__":
    main()
