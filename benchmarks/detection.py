"""Detection time for a killed node: fault_injected -> ticket_opened(node_down), over N runs.

    python benchmarks/detection.py [--runs 5] [--scenario ratelimiter-node-kill]

Each run is a real `operator-console run SCENARIO --headless` process against a real cluster;
the figure is read off its own timeline (monotonic `t`).
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


def one_run(scenario: str, invariant: str, data_dir: str) -> tuple[float | None, float]:
    # Chapter timings and monitor ticks both run on whole seconds; a random pace puts the
    # fault at a random point of the monitor's tick, as a real fault would be.
    pace = f"{random.uniform(0.9, 1.1):.3f}"
    started = time.monotonic()
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "operator_console", "run", scenario),
            *("--headless", "--quiet", "--mode", "auto", "--pace", pace),
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
        return None, wall
    return opened - injected, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--scenario", default="ratelimiter-node-kill")
    parser.add_argument("--invariant", default="node_down")
    args = parser.parse_args()
    times: list[float] = []
    with tempfile.TemporaryDirectory() as data_dir:
        for i in range(1, args.runs + 1):
            detection, wall = one_run(args.scenario, args.invariant, data_dir)
            shown = f"{detection:.3f} s" if detection is not None else "FAILED"
            print(f"run {i}: detection {shown} (run took {wall:.1f} s)", flush=True)
            if detection is not None:
                times.append(detection)
    if not times:
        sys.exit("no run detected the fault")
    print(
        f"{args.scenario}: {args.invariant} detected in median {statistics.median(times):.3f} s, "
        f"max {max(times):.3f} s over {len(times)}/{args.runs} runs"
    )
    if len(times) < args.runs:
        sys.exit(1)


if __name__ == "__main__":
    main()
