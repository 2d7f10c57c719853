"""Detection time for a killed process: fault_injected -> ticket_opened, over N runs.

    python benchmarks/detection.py [--runs 5] [--scenario ratelimiter-node-kill]
    python benchmarks/detection.py --subject etcd [--runs 5] [--interval SECONDS]

Each run is a real `operator-console run SCENARIO --headless` process against a real cluster;
the figure is read off its own timeline (monotonic `t`). With `--subject etcd` the scenario is
etcd-leader-kill and, next to the console's detection, each run also says how long etcd itself
took to elect a new leader: from the kill (the fault's `at`) to the first "became leader" line
a surviving member logged after it (the members' own zap timestamps, same clock).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

SUBJECTS = {
    "ratelimiter": ("ratelimiter-node-kill", "node_down"),
    "etcd": ("etcd-leader-kill", "member_down"),
}


def election_s(events: list[dict[str, Any]]) -> float | None:
    """Seconds from the kill to the first new leader in the members' logs (etcd only)."""
    injected = next((e for e in events if e["event"] == "fault_injected"), None)
    started = next((e for e in events if e["event"] == "run_started"), None)
    if injected is None or started is None:
        return None
    killed_at = datetime.fromisoformat(injected["at"])
    elected: list[datetime] = []
    for log in sorted((Path(started["run_dir"]) / "logs").glob("member-*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if "became leader at term" not in line:
                continue
            try:
                at = datetime.fromisoformat(json.loads(line)["ts"].replace("Z", "+00:00"))
            except (ValueError, KeyError):
                continue
            if at > killed_at:
                elected.append(at)
    return (min(elected) - killed_at).total_seconds() if elected else None


def one_run(
    scenario: str, invariant: str, data_dir: str, interval: float | None
) -> tuple[float | None, float | None, float]:
    # Chapter timings and monitor ticks both run on whole seconds; a random pace puts the
    # fault at a random point of the monitor's tick, as a real fault would be.
    pace = f"{random.uniform(0.9, 1.1):.3f}"
    extra = ("--interval", str(interval)) if interval else ()
    started = time.monotonic()
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "operator_console", "run", scenario),
            *("--headless", "--quiet", "--mode", "auto", "--brain", "rules", "--pace", pace),
            *extra,
        ],
        env={**os.environ, "OPERATOR_CONSOLE_DATA_DIR": data_dir},
        capture_output=True,
        text=True,
        timeout=180,
    )
    wall = time.monotonic() - started
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    injected = next((e["t"] for e in events if e["event"] == "fault_injected"), None)
    opened = next(
        (
            e["t"]
            for e in events
            if e["event"] == "ticket_opened" and e.get("invariant") == invariant
        ),
        None,
    )
    if proc.returncode != 0 or injected is None or opened is None:
        sys.stderr.write(proc.stderr[-2000:])
        return None, None, wall
    return opened - injected, election_s(events), wall


def _figures(values: list[float]) -> str:
    return f"median {statistics.median(values):.3f} s, max {max(values):.3f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--subject", choices=sorted(SUBJECTS), default="ratelimiter")
    parser.add_argument("--scenario", help="default: the subject's kill scenario")
    parser.add_argument("--invariant", help="default: the subject's down invariant")
    parser.add_argument("--interval", type=float, help="monitor tick (default: the console's 1 s)")
    args = parser.parse_args()
    scenario = args.scenario or SUBJECTS[args.subject][0]
    invariant = args.invariant or SUBJECTS[args.subject][1]
    times: list[float] = []
    elections: list[float] = []
    with tempfile.TemporaryDirectory() as data_dir:
        for i in range(1, args.runs + 1):
            detection, election, wall = one_run(scenario, invariant, data_dir, args.interval)
            shown = f"{detection:.3f} s" if detection is not None else "FAILED"
            line = f"run {i}: detection {shown}"
            if args.subject == "etcd":
                line += f", etcd's election {election:.3f} s" if election is not None else ""
                if election is not None:
                    elections.append(election)
            print(f"{line} (run took {wall:.1f} s)", flush=True)
            if detection is not None:
                times.append(detection)
    if not times:
        sys.exit("no run detected the fault")
    tick = f"{args.interval:g} s" if args.interval else "1 s (default)"
    print(
        f"{scenario}: {invariant} detected in {_figures(times)} over {len(times)}/{args.runs} "
        f"runs, monitor tick {tick}"
    )
    if elections:
        print(f"{scenario}: etcd elected a new leader in {_figures(elections)}")
    if len(times) < args.runs:
        sys.exit(1)


if __name__ == "__main__":
    main()
